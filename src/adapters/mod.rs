//! Platform adapters: every platform-specific type ends here. Each turns
//! its platform's updates into [`crate::domain::Inbound`] and delivers the
//! outbox in its platform's shape (through [`crate::outbox::Dispatcher`]).

pub mod console;
pub mod discord;
pub mod telegram;

use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::runtime::Service;

/// The services of every chat platform configured in `app.settings`
/// (a platform is configured when its token is set).
pub fn platform_services(app: &App, shutdown: &CancellationToken) -> Vec<Service> {
    let mut services: Vec<Service> = Vec::new();
    if app.settings.telegram.token.is_set() {
        services.push(telegram::service(app.clone(), shutdown.clone()));
    }
    if app.settings.discord.token.is_set() {
        services.push(discord::service(app, shutdown));
    }
    services
}
