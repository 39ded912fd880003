//! `failover`: will kill a docnode under load and measure how long its clients take to be
//! typing again (target under 2 s) and that no acknowledged edit was lost. It needs a
//! cluster (gateways, several docnodes, Postgres), which issue 4 brings; until then the
//! subcommand says so and exits with status 2.

/// What the subcommand prints while no cluster can be started.
pub const UNAVAILABLE: &str = "needs a cluster (see issue 4)";

/// The exit status of the placeholder: 2, "cannot run", distinct from a failed check (1).
pub const EXIT_STATUS: i32 = 2;
