//! Platform adapters: every platform-specific type ends here. Each parses
//! its platform's updates into the front door's arrivals
//! ([`crate::frontdoor`]), renders [`crate::domain::Outbound`] in its
//! platform's shape, and delivers the outbox (through
//! [`crate::outbox::Dispatcher`]) within its platform's limits. Adapters
//! take [`crate::frontdoor::Handles`], not the whole application.

pub mod console;
pub mod discord;
pub mod telegram;
