//! Running a Multi-Node group without a LAVA server: split the submission per role as the
//! server would ([`split`], [`plan`]), choose inventory boards for the sub-jobs
//! ([`allocate`]) and reserve them with every other job of the worker ([`reserve`]), run the
//! sub-jobs ([`run`], canceling the rest when an essential role fails: [`essential`]), in this
//! process or in the daemon ([`service`]), and print the results ([`print`]).

pub mod allocate;
mod board;
pub mod essential;
pub mod plan;
pub mod print;
pub mod reserve;
pub mod run;
pub mod service;
pub mod split;

pub use allocate::{Allocation, Candidate, Requirement};
pub use plan::GroupPlan;
pub use reserve::{Reservations, Reserved};
pub use run::{
    GroupOptions, GroupRunError, SubJobEnd, check_group, is_group_text, run_group, sub_job_id,
};
pub use split::{SubJob, assign_roles, is_multinode_submission, parse_submission, split};

/// Why a group cannot be split or placed.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// The submission is not a valid Multi-Node job (lava-server would refuse it too).
    #[error("Multi-Node submission: {message}")]
    Submission { message: String },
    /// A role asks for something labd does not do.
    #[error("role {role}: {message}")]
    Unsupported { role: String, message: String },
    /// The inventory can never hold the group, busy or not.
    #[error("the inventory can never run this group: {detail}")]
    Unsatisfiable { detail: String },
    /// The boards exist but stayed busy for the whole wait, or cannot be locked.
    #[error("boards for the group: {0}")]
    Boards(#[from] crate::jobs::runner::BoardError),
}
