//! Boot failure patterns and the messages LAVA 2023.01 uses for them: bootloader error
//! messages (from the device constants), kernel messages (`utils/messages.py`), login failures
//! (`actions/boot/__init__.py`), and LAVA's default constants (`base.jinja2`).

use super::device::DeviceConfiguration;
use super::error::{LavaError, LavaErrorType};

/// The `constants:` block lava-server 2023.01 renders from `base.jinja2` (as received by a
/// worker, comments included).
pub const DEFAULT_CONSTANTS_YAML: &str = include_str!("default-constants.yaml");

/// A device configuration with only LAVA's default constants.
pub fn default_device_configuration() -> DeviceConfiguration {
    // The embedded text is fixed and covered by a test; an error here is a build mistake.
    DeviceConfiguration::parse(DEFAULT_CONSTANTS_YAML).unwrap_or_default()
}

/// `LOGIN_INCORRECT_MSG`.
pub const LOGIN_INCORRECT: &str = "Login incorrect";
/// `LOGIN_TIMED_OUT_MSG`.
pub const LOGIN_TIMED_OUT: &str = "Login timed out";
/// `DISTINCTIVE_PROMPT_CHARACTERS`: a prompt without one of these may match status messages.
pub const DISTINCTIVE_PROMPT_CHARACTERS: &str = "\\:";
/// `REBOOT_COMMAND_LIST`: what `soft_reboot` defaults to.
pub const REBOOT_COMMANDS: [&str; 3] = ["reboot", "reboot -n", "reboot -nf"];

/// One kernel message LAVA watches for while waiting for a login or a prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelMessage {
    /// Regular expression that starts it (also an init prompt).
    pub start: &'static str,
    /// Regular expression that ends it, searched over the whole buffer.
    pub end: &'static str,
    /// Classification; `None` is decided from the text ([`classify_trace`]).
    pub kind: Option<&'static str>,
    /// A fatal message fails the boot with a `JobError` carrying the message.
    pub fatal: bool,
}

/// `KERNEL_MESSAGES`, in LAVA's order (the order is the pattern priority on ties).
pub const KERNEL_MESSAGES: [KernelMessage; 10] = [
    KernelMessage {
        start: r"-\[ cut here \]",
        end: r"-+\[ end trace \w* \]-+[^\n]*\r",
        kind: None,
        fatal: false,
    },
    KernelMessage {
        start: r"Unhandled fault",
        end: r"\r",
        kind: Some("fault"),
        fatal: false,
    },
    KernelMessage {
        start: r"BUG: KCSAN:",
        end: r"=+\r",
        kind: Some("kcsan"),
        fatal: false,
    },
    KernelMessage {
        start: r"BUG: KASAN:",
        end: r"=+\r",
        kind: Some("kasan"),
        fatal: false,
    },
    KernelMessage {
        start: r"BUG: KFENCE:",
        end: r"=+\r",
        kind: Some("kfence"),
        fatal: false,
    },
    KernelMessage {
        start: r"Oops(?: -|:)",
        end: r"\r",
        kind: Some("oops"),
        fatal: false,
    },
    KernelMessage {
        start: r"WARNING:",
        end: r"end trace[^\r]*\r",
        kind: Some("warning"),
        fatal: false,
    },
    KernelMessage {
        start: r"(kernel BUG at|BUG:)",
        end: r"\r",
        kind: Some("bug"),
        fatal: false,
    },
    KernelMessage {
        start: r"invalid opcode:",
        end: r"\r",
        kind: Some("invalid opcode"),
        fatal: false,
    },
    KernelMessage {
        start: r"Kernel panic - not syncing",
        end: r"end Kernel panic[^\r]*\r",
        kind: Some("panic"),
        fatal: true,
    },
];

/// `LinuxKernelMessages.get_init_prompts()`.
pub fn init_prompts() -> Vec<String> {
    KERNEL_MESSAGES
        .iter()
        .map(|m| m.start.to_string())
        .collect()
}

/// The kind of a `cut here` trace, from its text (LAVA's fallback classification).
pub fn classify_trace(message: &str) -> &'static str {
    if message.contains("Oops") {
        "oops"
    } else if message.contains("BUG") {
        "bug"
    } else if message.contains("WARNING") {
        "warning"
    } else {
        "unknown"
    }
}

/// LAVA's warning for a prompt with neither `\` nor `:`, or `None` when the prompt is fine.
pub fn prompt_warning(prompt: &str) -> Option<String> {
    if prompt
        .chars()
        .any(|c| DISTINCTIVE_PROMPT_CHARACTERS.contains(c))
    {
        None
    } else {
        Some(format!(
            "The string '{prompt}' does not look like a typical prompt and could match status messages instead. Please check the job log files and use a prompt string which matches the actual prompt string more closely."
        ))
    }
}

/// What a wait during login is looking for, in LAVA's order: the kernel messages, the job's
/// prompts, an optional job failure message, then the login prompt (or, without auto-login,
/// `Login timed out`) and `Login incorrect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginPrompts {
    pub patterns: Vec<String>,
    n_prompts: usize,
    failure: bool,
    auto_login: bool,
}

/// What a match during the first login wait means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginMatch {
    /// A kernel message started; wait for its `end` next (index into [`KERNEL_MESSAGES`]).
    Kernel(usize),
    /// One of the job's prompts: booted (without auto-login) — index into the prompts.
    Prompt(usize),
    /// The job's `failure_message`: the job fails with
    /// `Matched job-specific failure message: '...'`.
    JobFailure,
    /// The login prompt (auto-login): send the username.
    LoginPrompt,
    /// `Login incorrect` before the login prompt: LAVA warns and goes on.
    LoginIncorrect,
    /// `Login timed out` with no auto-login: the image wants login details.
    LoginTimedOut,
}

impl LoginPrompts {
    /// The list `LoginAction.run` builds before `check_kernel_messages`.
    pub fn new(
        prompts: &[String],
        failure_message: Option<&str>,
        login_prompt: Option<&str>,
    ) -> Self {
        let mut patterns = init_prompts();
        patterns.extend(prompts.iter().cloned());
        if let Some(f) = failure_message {
            patterns.push(f.to_string());
        }
        match login_prompt {
            None => {
                patterns.push(LOGIN_TIMED_OUT.into());
                patterns.push(LOGIN_INCORRECT.into());
            }
            Some(l) => {
                patterns.push(l.to_string());
                patterns.push(LOGIN_INCORRECT.into());
            }
        }
        Self {
            patterns,
            n_prompts: prompts.len(),
            failure: failure_message.is_some(),
            auto_login: login_prompt.is_some(),
        }
    }

    /// Interprets the index of the pattern that matched.
    pub fn classify(&self, index: usize) -> Option<LoginMatch> {
        let k = KERNEL_MESSAGES.len();
        if index < k {
            return Some(LoginMatch::Kernel(index));
        }
        let mut i = index - k;
        if i < self.n_prompts {
            return Some(LoginMatch::Prompt(i));
        }
        i -= self.n_prompts;
        if self.failure {
            if i == 0 {
                return Some(LoginMatch::JobFailure);
            }
            i -= 1;
        }
        match (i, self.auto_login) {
            (0, true) => Some(LoginMatch::LoginPrompt),
            (0, false) => Some(LoginMatch::LoginTimedOut),
            (1, _) => Some(LoginMatch::LoginIncorrect),
            _ => None,
        }
    }
}

/// `matched a bootloader error message: '<pattern>' (<index>)` — an InfrastructureError.
pub fn bootloader_error(pattern: &str, index: usize) -> LavaError {
    LavaError::new(
        LavaErrorType::Infrastructure,
        format!("matched a bootloader error message: '{pattern}' ({index})"),
    )
}

/// A fatal kernel message: the job fails with the message text as its error.
pub fn kernel_fatal(message: &str) -> LavaError {
    LavaError::new(LavaErrorType::Job, message)
}

/// The job's own `failure_message` matched.
pub fn job_failure_message(pattern: &str) -> LavaError {
    LavaError::new(
        LavaErrorType::Job,
        format!("Matched job-specific failure message: '{pattern}'"),
    )
}

/// `Login incorrect` after sending the credentials.
pub fn login_incorrect() -> LavaError {
    LavaError::new(LavaErrorType::Job, LOGIN_INCORRECT)
}

/// `Login timed out` after sending the credentials.
pub fn login_timed_out() -> LavaError {
    LavaError::new(LavaErrorType::Job, LOGIN_TIMED_OUT)
}

/// The password prompt never came but `Login timed out` did.
pub fn password_prompt_not_matched() -> LavaError {
    LavaError::new(
        LavaErrorType::Job,
        "Password prompt not matched, please update the job definition with the correct one.",
    )
}

/// Without auto-login the image asked for a login.
pub fn auto_login_not_enabled() -> LavaError {
    LavaError::new(
        LavaErrorType::Job,
        "auto_login not enabled but image requested login details.",
    )
}

/// `Connection closed` (pexpect EOF) — infrastructure.
pub fn connection_closed() -> LavaError {
    LavaError::new(LavaErrorType::Infrastructure, "Connection closed")
}

/// The error messages of a bootloader section of the device constants.
pub fn bootloader_error_messages(dev: &DeviceConfiguration, bootloader: &str) -> Vec<String> {
    dev.constants
        .bootloader(bootloader)
        .map(|b| b.error_messages)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::expect::Pattern;

    #[test]
    fn defaults_parse_and_match_the_reference() {
        let dev = default_device_configuration();
        let ub = dev.constants.bootloader("u-boot").unwrap();
        assert_eq!(
            ub.interrupt_prompt.as_deref(),
            Some("Hit any key to stop autoboot")
        );
        assert_eq!(ub.interrupt_character.unwrap().0, " ");
        assert_eq!(ub.interrupt_newline, Some(true));
        assert_eq!(ub.error_messages.len(), 16);
        assert_eq!(ub.error_messages[15], "ERROR: RD image overlaps OS image");
        // A single-quoted scalar over two lines folds to a space.
        let bb = dev.constants.bootloader("barebox").unwrap();
        assert_eq!(bb.interrupt_character.unwrap().0, " ");
        let grub = dev.constants.bootloader("grub").unwrap();
        assert_eq!(grub.interrupt_newline, Some(false));
        assert_eq!(
            dev.constants
                .bootloader("ipxe")
                .unwrap()
                .interrupt_ctrl_list,
            ["b"]
        );
        assert_eq!(
            dev.constants.kernel_start_message.as_deref(),
            Some("Linux version [0-9]")
        );
        assert_eq!(
            dev.constants.default_shell_prompt.as_deref(),
            Some("lava-test: # ")
        );
        assert_eq!(dev.constants.spawn_maxread, Some(4092));
        assert_eq!(dev.constants.failure_retry, Some(1));
        assert_eq!(dev.constants.boot_retry, None);
        assert_eq!(dev.constants.posix.results_dir("12"), "/lava-12");
        for b in [
            "barebox",
            "u-boot",
            "grub",
            "grub-efi",
            "ipxe",
            "depthcharge",
        ] {
            for m in bootloader_error_messages(&dev, b) {
                Pattern::new(&m).unwrap();
            }
        }
    }

    #[test]
    fn login_prompt_list_is_lavas() {
        // Observed: one prompt, no login prompt.
        let lp = LoginPrompts::new(&["NEVER-SEEN-PROMPT".into()], None, None);
        assert_eq!(
            lp.patterns,
            [
                r"-\[ cut here \]",
                "Unhandled fault",
                "BUG: KCSAN:",
                "BUG: KASAN:",
                "BUG: KFENCE:",
                "Oops(?: -|:)",
                "WARNING:",
                "(kernel BUG at|BUG:)",
                "invalid opcode:",
                "Kernel panic - not syncing",
                "NEVER-SEEN-PROMPT",
                "Login timed out",
                "Login incorrect"
            ]
        );
        assert_eq!(lp.classify(9), Some(LoginMatch::Kernel(9)));
        assert_eq!(lp.classify(10), Some(LoginMatch::Prompt(0)));
        assert_eq!(lp.classify(11), Some(LoginMatch::LoginTimedOut));
        assert_eq!(lp.classify(12), Some(LoginMatch::LoginIncorrect));
        let lp = LoginPrompts::new(&["# ".into()], Some("FAIL"), Some("login:"));
        assert_eq!(lp.classify(11), Some(LoginMatch::JobFailure));
        assert_eq!(lp.classify(12), Some(LoginMatch::LoginPrompt));
        assert_eq!(lp.classify(13), Some(LoginMatch::LoginIncorrect));
        for p in &lp.patterns {
            Pattern::new(p).unwrap();
        }
        assert!(
            prompt_warning("NEVER-SEEN-PROMPT")
                .unwrap()
                .starts_with("The string 'NEVER-SEEN-PROMPT' does not look like a typical prompt")
        );
        assert_eq!(prompt_warning("root@debian:"), None);
        assert_eq!(
            bootloader_error("TIMEOUT", 3).message,
            "matched a bootloader error message: 'TIMEOUT' (3)"
        );
    }
}
