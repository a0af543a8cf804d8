//! One file per resource of the service API; each handler gets a caller
//! already authorised by the route (admin) or checks the reporter itself.

pub mod agents;
pub mod bundle;
pub mod events;
pub mod exceptions;
pub mod ingest;
pub mod policies;
