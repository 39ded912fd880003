//! The error type shared by every fallible operation in this crate.

/// Why an operation could not be built, applied, composed or transformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OtError {
    /// The operation was written for a document of a different length.
    #[error("operation expects a document of {expected} characters but it has {actual}")]
    BaseLengthMismatch {
        /// The document length (in code points) the operation expects.
        expected: u64,
        /// The document length (in code points) it was given.
        actual: u64,
    },

    /// Two operations whose lengths do not line up were composed or transformed.
    #[error(
        "the operations do not line up: compose needs the first operation's result length \
         to equal the second's starting length, and transform needs both to start from the \
         same length"
    )]
    IncompatibleOperations,

    /// A count or a length is larger than [`crate::MAX_LENGTH`].
    #[error("a count or document length exceeds the limit of 2^53 (9007199254740992) characters")]
    TooLong,
}
