//! HTTP/1.1 on the shared listener: request parsing (httparse), routing and the thin REST
//! handlers. Handlers parse and validate on the core, then ask the control thread; they never
//! touch the registry or history directly. `/realtime` upgrades are handed to `ws`.

mod error;
pub mod publish;
pub mod request;
mod response;
pub mod routes;

pub use error::ApiError;
pub use request::Head;
pub use response::Response;
pub use routes::route;
