//! Choosing boards for the sub-jobs of a group: a sub-job of a role with `device_type` T and
//! `tags` S can run on any board of type T whose tags include S (lava-server's rule).
//!
//! Roles may compete for the same boards (same type, different tags), so the choice is a
//! bipartite matching, not first-fit: first-fit could leave a tagged role without its only
//! board while an untagged role took it. Two questions, asked separately:
//! - can the inventory *ever* hold the group (every board free)? If not, the job is refused
//!   at once, naming the role that cannot be placed;
//! - can it hold it *now* (busy boards excluded)? If not, the caller waits
//!   ([`super::reserve::Reservations::acquire`] does so and takes all boards at once, so two
//!   groups never deadlock holding half each).

use super::GroupError;
use crate::ids::DeviceName;
use crate::inventory::DeviceConfig;

/// What one sub-job needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub role: String,
    pub sub_id: u32,
    pub device_type: String,
    pub tags: Vec<String>,
}

/// A board that might run a sub-job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub name: DeviceName,
    pub device_type: String,
    pub tags: Vec<String>,
}

impl Candidate {
    pub fn from_inventory(devices: &[DeviceConfig]) -> Vec<Candidate> {
        devices
            .iter()
            .map(|d| Candidate {
                name: d.name().clone(),
                device_type: d.device_type().to_string(),
                tags: d.tags.clone(),
            })
            .collect()
    }

    pub(super) fn fits(&self, req: &Requirement) -> bool {
        self.device_type == req.device_type && req.tags.iter().all(|t| self.tags.contains(t))
    }
}

/// Boards chosen for a group: `devices[i]` runs `requirements[i]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub devices: Vec<DeviceName>,
}

/// Maximum matching (Kuhn's augmenting paths; groups and labs are small). Returns, per
/// requirement, the index of its board, or `None` for those left unplaced.
fn matching(reqs: &[Requirement], boards: &[&Candidate]) -> Vec<Option<usize>> {
    let fits: Vec<Vec<usize>> = reqs
        .iter()
        .map(|r| (0..boards.len()).filter(|b| boards[*b].fits(r)).collect())
        .collect();
    let mut owner: Vec<Option<usize>> = vec![None; boards.len()];
    fn augment(
        r: usize,
        fits: &[Vec<usize>],
        seen: &mut [bool],
        owner: &mut [Option<usize>],
    ) -> bool {
        // A free board first (so sub-jobs take boards in inventory order when nothing
        // competes), then one whose holder can move elsewhere.
        if let Some(&b) = fits[r].iter().find(|b| owner[**b].is_none() && !seen[**b]) {
            seen[b] = true;
            owner[b] = Some(r);
            return true;
        }
        for &b in &fits[r] {
            if seen[b] {
                continue;
            }
            seen[b] = true;
            if owner[b].is_some_and(|o| augment(o, fits, seen, owner)) {
                owner[b] = Some(r);
                return true;
            }
        }
        false
    }
    for r in 0..reqs.len() {
        let mut seen = vec![false; boards.len()];
        augment(r, &fits, &mut seen, &mut owner);
    }
    let mut placed = vec![None; reqs.len()];
    for (b, o) in owner.iter().enumerate() {
        if let Some(r) = o {
            placed[*r] = Some(b);
        }
    }
    placed
}

/// Why `reqs` does not fit on `boards`: the first unplaced role with what the inventory has.
fn explain(reqs: &[Requirement], boards: &[&Candidate], placed: &[Option<usize>]) -> String {
    let Some(i) = placed.iter().position(Option::is_none) else {
        return String::new();
    };
    let r = &reqs[i];
    let need = reqs.iter().filter(|o| o.role == r.role).count();
    let fitting: Vec<&str> = boards
        .iter()
        .filter(|b| b.fits(r))
        .map(|b| b.name.as_str())
        .collect();
    let tags = if r.tags.is_empty() {
        String::new()
    } else {
        format!(" with tags [{}]", r.tags.join(", "))
    };
    format!(
        "role {} needs {need} board(s) of type {}{tags}; matching boards: [{}]{}",
        r.role,
        r.device_type,
        fitting.join(", "),
        if fitting.len() >= need {
            " (other roles need them too)"
        } else {
            ""
        }
    )
}

/// Refuses a group the inventory can never hold.
pub fn check_feasible(reqs: &[Requirement], boards: &[Candidate]) -> Result<(), GroupError> {
    let all: Vec<&Candidate> = boards.iter().collect();
    let placed = matching(reqs, &all);
    if placed.iter().all(Option::is_some) {
        Ok(())
    } else {
        Err(GroupError::Unsatisfiable {
            detail: explain(reqs, &all, &placed),
        })
    }
}

/// Places the group on boards that are not `busy`: `Ok(None)` when it would fit but some
/// boards are busy now (wait and retry); an error when it can never fit.
pub fn try_allocate(
    reqs: &[Requirement],
    boards: &[Candidate],
    busy: impl Fn(&DeviceName) -> bool,
) -> Result<Option<Allocation>, GroupError> {
    check_feasible(reqs, boards)?;
    let free: Vec<&Candidate> = boards.iter().filter(|b| !busy(&b.name)).collect();
    let placed = matching(reqs, &free);
    if placed.iter().any(Option::is_none) {
        return Ok(None);
    }
    Ok(Some(Allocation {
        devices: placed
            .into_iter()
            .flatten()
            .map(|b| free[b].name.clone())
            .collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board(name: &str, ty: &str, tags: &[&str]) -> Candidate {
        Candidate {
            name: DeviceName::new(name).unwrap(),
            device_type: ty.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
        }
    }

    fn req(role: &str, sub_id: u32, ty: &str, tags: &[&str]) -> Requirement {
        Requirement {
            role: role.into(),
            sub_id,
            device_type: ty.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
        }
    }

    fn names(a: &Allocation) -> Vec<&str> {
        a.devices.iter().map(|d| d.as_str()).collect()
    }

    #[test]
    fn matching_beats_first_fit() {
        // First-fit would give bbb01 (tagged) to the untagged role and strand "usb".
        let boards = [board("bbb01", "bbb", &["usb"]), board("bbb02", "bbb", &[])];
        let reqs = [req("any", 0, "bbb", &[]), req("usb", 1, "bbb", &["usb"])];
        let a = try_allocate(&reqs, &boards, |_| false).unwrap().unwrap();
        assert_eq!(names(&a), ["bbb02", "bbb01"]);
    }

    #[test]
    fn never_satisfiable_is_refused_with_the_role() {
        let boards = [
            board("bbb01", "bbb", &[]),
            board("rpi01", "rpi4", &["camera"]),
        ];
        let e = check_feasible(
            &[req("server", 0, "bbb", &[]), req("server", 1, "bbb", &[])],
            &boards,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "the inventory can never run this group: role server needs 2 board(s) of type bbb; matching boards: [bbb01]"
        );
        let e = check_feasible(&[req("cam", 0, "rpi4", &["camera", "hdmi"])], &boards)
            .unwrap_err()
            .to_string();
        assert!(e.contains("role cam needs 1 board(s) of type rpi4 with tags [camera, hdmi]; matching boards: []"), "{e}");
        let e = check_feasible(
            &[req("a", 0, "bbb", &[]), req("b", 1, "bbb", &[])],
            &boards[..1],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.ends_with("matching boards: [bbb01] (other roles need them too)"),
            "{e}"
        );
    }

    #[test]
    fn busy_boards_mean_wait_not_refusal() {
        let boards = [board("bbb01", "bbb", &[]), board("bbb02", "bbb", &[])];
        let reqs = [req("s", 0, "bbb", &[]), req("s", 1, "bbb", &[])];
        assert_eq!(
            try_allocate(&reqs, &boards, |n| n.as_str() == "bbb02").unwrap(),
            None
        );
    }
}
