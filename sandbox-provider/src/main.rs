//! `terraform-provider-sandbox`: started by terraform, never by hand (it speaks the plugin
//! protocol on a loopback port it prints on stdout).

use std::process::ExitCode;

use terraform_provider_sandbox::{SandboxProvider, PROVIDER_NAME};

fn main() -> ExitCode {
    // tf-provider captures a std backtrace into every diagnostic it builds when the environment
    // asks for backtraces; RUST_LIB_BACKTRACE=0 turns that off and leaves panic backtraces alone.
    // Set before any thread exists.
    std::env::set_var("RUST_LIB_BACKTRACE", "0");

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("terraform-provider-sandbox: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let served = runtime.block_on(async {
        swallow_sigint();
        tf_provider::serve(PROVIDER_NAME, SandboxProvider::new()).await
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("terraform-provider-sandbox: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Terraform and its providers share a process group, and a Ctrl-C (or the gateway's cancel)
/// sends SIGINT to all of them. Terraform then asks providers to stop and waits for in-flight
/// operations; a provider that died on SIGINT would lose them. Plugins ignore SIGINT; so do we.
fn swallow_sigint() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::interrupt()) {
        Ok(mut interrupts) => {
            tokio::spawn(async move { while interrupts.recv().await.is_some() {} });
        }
        Err(err) => eprintln!("terraform-provider-sandbox: cannot ignore SIGINT: {err}"),
    }
}
