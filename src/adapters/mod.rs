//! Platform adapters: every platform-specific type ends here. Each turns
//! its platform's updates into [`crate::domain::Inbound`] and delivers the
//! outbox in its platform's shape.

pub mod console;
