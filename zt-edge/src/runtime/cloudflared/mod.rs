//! Unmodified cloudflared connectors: [`register`] serves their connections (registration
//! and control calls), [`link`] is how flows are opened and spliced on them.
//!
//! Flows: the edge opens one stream per TCP flow, sends the preamble and a `ConnectRequest`,
//! and reads cloudflared's `ConnectResponse`. cloudflared ends the whole flow at the first
//! FIN from either side; the edge relays that as it happens and notes it in the flow's audit
//! line.

pub(crate) mod link;
pub(crate) mod register;
