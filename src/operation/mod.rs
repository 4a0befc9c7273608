//! What the program does, once the command line is read: run a role,
//! check a file, mint a token, or print help or the version.

pub(crate) mod supervise;

use crate::cli::{Command, Role, TokenRequest, USAGE};
use crate::config::Settings;
use crate::error::Error;
use crate::signal::token::{self, Grant, TokenKey};
use crate::{process, sfu, signal};
use std::path::Path;

/// Does what `cmd` asks: a role runs until it is stopped, the rest
/// print their result and return.
pub fn run(cmd: Command) -> Result<(), Error> {
    match cmd {
        Command::Help => println!("{USAGE}"),
        Command::Version => println!("wren {}", env!("CARGO_PKG_VERSION")),
        Command::CheckConfig(path) => check_config(&path)?,
        Command::Token(req) => println!("{}", mint(&req)?),
        Command::Run(role, flags) => run_role(role, &Settings::new(*flags)?)?,
    }
    Ok(())
}

fn check_config(path: &Path) -> Result<(), Error> {
    let s = Settings::of_file(path)?;
    println!("{}: ok", path.display());
    // What a cluster node will be known as (the check reaches no Redis).
    if let Some(cluster) = &s.cluster {
        let sfus: Vec<String> = (1..=s.sfus).map(|n| s.sfu_id(n).to_string()).collect();
        println!(
            "cluster {cluster}: node {}, SFUs {}",
            s.bizid,
            sfus.join(", ")
        );
    }
    Ok(())
}

/// A room token signed with the file's secret.
fn mint(req: &TokenRequest) -> Result<String, Error> {
    let secret = Settings::of_file(&req.config)?
        .token_secret
        .ok_or_else(|| {
            Error::Config(format!(
                "{}: token: the file sets no token-secret or token-secret-file",
                req.config.display()
            ))
        })?;
    // `config` checked the secret's length, the only thing `new` refuses.
    let key = TokenKey::new(&secret.0).map_err(Error::Config)?;
    Ok(key.mint(&Grant {
        uid: req.uid.clone(),
        rid: req.rid.clone(),
        exp: token::unix_now() + req.ttl_secs,
        publish: req.publish,
    }))
}

fn run_role(role: Role, s: &Settings) -> Result<(), Error> {
    process::init_logging(s.log_level);
    let dir = || {
        s.socket_dir
            .clone()
            .unwrap_or_else(process::service_socket_dir)
    };
    match role {
        Role::Signal => signal::run(s.signal_config(&dir())).map_err(|e| Error::io("signal", e)),
        Role::Sfu => sfu::run(s.sfu_config(&dir())).map_err(|e| Error::io("sfu", e)),
        Role::AllInOne => supervise::run(s),
    }
}
