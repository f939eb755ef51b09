use clap::Command;

/// The flags of `command` that lack help text or an environment variable. Both
/// binaries promise every flag has both (`--help` documents them, and a Helm chart or
/// a plain Deployment can set any of them through the environment); their tests
/// assert this list is empty.
pub fn undocumented_flags(command: &Command) -> Vec<String> {
    command
        .get_arguments()
        .filter(|arg| !matches!(arg.get_id().as_str(), "help" | "version"))
        .filter(|arg| arg.get_help().is_none() || arg.get_env().is_none())
        .map(|arg| arg.get_id().to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use clap::{Arg, Command};

    use super::undocumented_flags;

    #[test]
    fn names_flags_without_help_or_env() {
        let command = Command::new("x")
            .arg(
                Arg::new("good")
                    .long("good")
                    .help("documented")
                    .env("X_GOOD"),
            )
            .arg(Arg::new("no-env").long("no-env").help("documented"))
            .arg(Arg::new("no-help").long("no-help").env("X_NO_HELP"));
        assert_eq!(undocumented_flags(&command), ["no-env", "no-help"]);
    }
}
