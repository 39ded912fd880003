// What the server's error and close codes mean, in words for the person typing (the codes
// and the server's own wording are in docs/protocol.md; the server's words are for logs).

/** Words for a person for an Error message or a close code from the server. */
export function describeError(code, message) {
  const said = String(message ?? "").replace(/[.\s]+$/, "");
  switch (code) {
    case 4503:
      return /restarting/.test(said)
        ? "The server is restarting — your changes are safe and will be sent when it is back."
        : "The connection to the document was interrupted — your changes are safe and will be sent when it is back.";
    case 4413:
      return /(message|update) larger/.test(said)
        ? "That change is too large to send in one go. Try pasting it in smaller pieces."
        : "This document has reached its size limit, so your last change could not be saved.";
    case 4429:
      return "You are editing faster than the server accepts; your changes will be sent in a moment.";
    case 4403:
      return "You can read this document but not change it; your change was not saved.";
    case 4409:
    case 4410:
    case 4416:
      return "Your copy of the document fell out of step with the server; it is being reloaded.";
    case 4508:
      return "Your connection fell behind the others; catching up…";
    case 4500:
      return "The server ran into a problem; reconnecting…";
    case 4400:
      return `The server did not understand a message from this page${said ? ` (${said})` : ""}.`;
    default:
      return said ? `${said[0].toUpperCase()}${said.slice(1)}.` : "The connection was lost; reconnecting…";
  }
}
