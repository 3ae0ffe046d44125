//! The edge of the tools: input files and standard input, passphrases (environment, then the
//! terminal without echo), standard output.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;

use zeroize::Zeroizing;

use crate::config::Env;
use crate::tools::ToolError;

/// The variable every tool reads a passphrase from (after any more specific one).
pub const PASSPHRASE_VAR: &str = "OFC_SIGNER_PASSPHRASE";

/// Whether `path` means standard input (absent or `-`).
pub fn is_stdin(path: Option<&Path>) -> bool {
    path.is_none_or(|p| p.as_os_str() == "-")
}

/// Reads a whole file, or standard input for `None` / `-`, into a zeroizing buffer.
pub fn read_source(path: Option<&Path>) -> Result<Zeroizing<Vec<u8>>, ToolError> {
    let mut buffer = Zeroizing::new(Vec::new());
    match path {
        Some(path) if !is_stdin(Some(path)) => {
            let mut file = std::fs::File::open(path)
                .map_err(|e| ToolError::failure(format!("cannot read {}: {e}", path.display())))?;
            // Size the buffer up front so growing it leaves no copies of the text behind.
            if let Ok(metadata) = file.metadata() {
                buffer.reserve(
                    usize::try_from(metadata.len())
                        .unwrap_or(0)
                        .saturating_add(1),
                );
            }
            file.read_to_end(&mut buffer)
                .map_err(|e| ToolError::failure(format!("cannot read {}: {e}", path.display())))?;
        }
        _ => {
            buffer.reserve(64 * 1024);
            std::io::stdin()
                .lock()
                .read_to_end(&mut buffer)
                .map_err(|e| ToolError::failure(format!("cannot read standard input: {e}")))?;
        }
    }
    Ok(buffer)
}

/// Turns bytes into text without leaving an unzeroized copy; `what` names the input in the
/// error.
pub fn into_text(
    mut bytes: Zeroizing<Vec<u8>>,
    what: &str,
) -> Result<Zeroizing<String>, ToolError> {
    let vec = std::mem::take(&mut *bytes);
    match String::from_utf8(vec) {
        Ok(text) => Ok(Zeroizing::new(text)),
        Err(error) => {
            // Back into a zeroizing buffer before it is dropped.
            *bytes = error.into_bytes();
            Err(ToolError::failure(format!("{what} is not UTF-8 text")))
        }
    }
}

/// Removes one trailing line ending (`\n` or `\r\n`), as `$(cat file)` or `echo` would add.
pub fn strip_one_line_ending(text: &mut Zeroizing<String>) {
    if text.ends_with("\r\n") {
        let len = text.len() - 2;
        text.truncate(len);
    } else if text.ends_with('\n') {
        let len = text.len() - 1;
        text.truncate(len);
    }
}

/// The first of `names` that is set to a non-empty value.
pub fn passphrase_from_env(env: &Env, names: &[&str]) -> Option<Zeroizing<String>> {
    names
        .iter()
        .find_map(|name| env.get(name).filter(|value| !value.is_empty()))
        .map(|value| Zeroizing::new(value.to_string()))
}

/// A passphrase from the first non-empty variable of `names`, else typed at the terminal without
/// echo (twice when `confirm`). Never from the command line.
pub fn passphrase(
    env: &Env,
    names: &[&str],
    prompt: &str,
    confirm: bool,
) -> Result<Zeroizing<String>, ToolError> {
    if let Some(passphrase) = passphrase_from_env(env, names) {
        return Ok(passphrase);
    }
    let no_terminal = |e: std::io::Error| {
        ToolError::failure(format!(
            "no passphrase: set {} or run in a terminal ({e})",
            names.join(" or ")
        ))
    };
    let first = Zeroizing::new(rpassword::prompt_password(prompt).map_err(no_terminal)?);
    if confirm {
        let second = Zeroizing::new(
            rpassword::prompt_password("Repeat the passphrase: ").map_err(no_terminal)?,
        );
        if *first != *second {
            return Err(ToolError::failure("the passphrases do not match"));
        }
    }
    Ok(first)
}

/// Writes `bytes` to standard output, followed by a newline only when it is a terminal (so a
/// pipe or a file gets exactly `bytes`).
pub fn write_stdout(bytes: &[u8]) -> Result<(), ToolError> {
    let mut stdout = std::io::stdout().lock();
    let newline = stdout.is_terminal();
    stdout
        .write_all(bytes)
        .and_then(|()| {
            if newline {
                stdout.write_all(b"\n")
            } else {
                Ok(())
            }
        })
        .and_then(|()| stdout.flush())
        .map_err(|e| ToolError::failure(format!("cannot write to standard output: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_endings() {
        for (input, expected) in [
            ("xprv\n", "xprv"),
            ("xprv\r\n", "xprv"),
            ("xprv\n\n", "xprv\n"),
            ("xprv", "xprv"),
            ("", ""),
        ] {
            let mut text = Zeroizing::new(input.to_string());
            strip_one_line_ending(&mut text);
            assert_eq!(text.as_str(), expected);
        }
    }

    #[test]
    fn environment_passphrases_in_order_skipping_empty_values() {
        let env = Env::from_pairs([("WALLET_w_PASSPHRASE", ""), (PASSPHRASE_VAR, "general")]);
        assert_eq!(
            passphrase_from_env(&env, &["WALLET_w_PASSPHRASE", PASSPHRASE_VAR]).as_deref(),
            Some(&"general".to_string())
        );
        let env = Env::from_pairs([("WALLET_w_PASSPHRASE", "own"), (PASSPHRASE_VAR, "general")]);
        assert_eq!(
            passphrase_from_env(&env, &["WALLET_w_PASSPHRASE", PASSPHRASE_VAR]).as_deref(),
            Some(&"own".to_string())
        );
        assert!(passphrase_from_env(&Env::default(), &[PASSPHRASE_VAR]).is_none());
    }

    #[test]
    fn text_must_be_utf8() {
        let ok = into_text(Zeroizing::new(b"abc".to_vec()), "input").unwrap();
        assert_eq!(ok.as_str(), "abc");
        let error = into_text(Zeroizing::new(vec![0xff, 0x61]), "input").unwrap_err();
        assert_eq!(error.message, "input is not UTF-8 text");
    }
}
