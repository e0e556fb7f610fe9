use clap::Parser;
use terrastream::app::Application;
use terrastream::auth;
use terrastream::cli::{Cli, Command, TokenCommand};
use terrastream::domain::Principal;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // A run's monitor is a small process of its own, with a runtime of its own.
    if let Command::Monitor { step_dir } = &cli.command {
        return terrastream::runs::monitor::run(step_dir);
    }
    actix_web::rt::System::new().block_on(gateway(cli.command))
}

async fn gateway(command: Command) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,refinery_core=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    match command {
        Command::Monitor { .. } => {}
        Command::Serve(args) => {
            let settings = args.into_settings();
            let app = Application::build(settings.clone())?;
            if let Some(token) = app.new_admin_token() {
                // Printed once, to the terminal only; never logged.
                println!(
                    "Admin token (also in {}):\n{token}",
                    settings.admin_token_path().display()
                );
            }
            tracing::info!(port = app.port(), data_dir = %settings.data_dir.display(), "terrastream listening");
            app.run_until_stopped().await?;
        }
        Command::Token {
            command:
                TokenCommand::Create {
                    owner,
                    admin,
                    data_dir,
                    database_url,
                },
        } => {
            let mut settings = terrastream::config::Settings::new(data_dir);
            settings.database_url = database_url.filter(|u| !u.trim().is_empty());
            if settings.database_url.is_none() {
                std::fs::create_dir_all(&settings.data_dir)?;
            }
            let store = terrastream::store::open(&settings)?;
            let principal = Principal {
                owner: owner.trim().to_owned(),
                is_admin: admin,
            };
            anyhow::ensure!(!principal.owner.is_empty(), "--owner must not be empty");
            let token = auth::create_token(store.as_ref(), &principal, Some("cli"))?;
            println!("{token}");
        }
    }
    Ok(())
}
