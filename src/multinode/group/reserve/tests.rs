use super::*;

fn board(name: &str, ty: &str) -> Candidate {
    Candidate {
        name: DeviceName::new(name).unwrap(),
        device_type: ty.into(),
        tags: Vec::new(),
    }
}

fn req(sub_id: u32, ty: &str) -> Requirement {
    Requirement {
        role: "r".into(),
        sub_id,
        device_type: ty.into(),
        tags: Vec::new(),
    }
}

const LONG: Option<Duration> = Some(Duration::from_secs(10));

#[tokio::test]
async fn waits_for_release_and_takes_all_at_once() {
    let boards = vec![board("bbb01", "bbb"), board("bbb02", "bbb")];
    let r = Reservations::new();
    let first = r
        .acquire("job 1", &[req(0, "bbb")], &boards, LONG, |_| {})
        .await
        .unwrap();
    assert!(r.is_taken(&first.allocation.devices[0]));
    let (r2, b2) = (r.clone(), boards.clone());
    let (tx, rx) = tokio::sync::oneshot::channel();
    let waiter = tokio::spawn(async move {
        r2.acquire("group 2", &[req(0, "bbb"), req(1, "bbb")], &b2, LONG, |d| {
            let _ = tx.send(d);
        })
        .await
        .map(|g| g.allocation.devices.len())
    });
    assert_eq!(rx.await.unwrap(), "busy: [bbb01 (job 1)]");
    // Nothing partial: the free board stays free while the group waits.
    assert!(!r.is_taken(&boards[1].name));
    assert_eq!(r.waiters(), ["group 2"]);
    drop(first);
    assert_eq!(waiter.await.unwrap().unwrap(), 2);
    assert!(boards.iter().all(|b| !r.is_taken(&b.name)));
    assert!(r.waiters().is_empty());
}

#[tokio::test]
async fn a_timeout_names_the_busy_boards_and_leaves_the_queue() {
    let boards = vec![board("bbb01", "bbb")];
    let r = Reservations::new();
    let _held = r
        .hold("job 1", &boards[0].name, None, |_| {})
        .await
        .unwrap();
    let e = r
        .acquire(
            "group 2",
            &[req(0, "bbb")],
            &boards,
            Some(Duration::from_millis(30)),
            |_| {},
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("busy: [bbb01 (job 1)]"), "{e}");
    assert!(r.waiters().is_empty());
}

#[tokio::test]
async fn later_waiters_do_not_overtake_earlier_ones_for_the_same_boards() {
    let boards = vec![board("a", "t"), board("b", "t"), board("c", "u")];
    let r = Reservations::new();
    let held_a = r
        .hold("job 1", &boards[0].name, None, |_| {})
        .await
        .unwrap();
    // A group wanting both `t` boards queues behind job 1.
    let (r2, b2) = (r.clone(), boards.clone());
    let group = tokio::spawn(async move {
        r2.acquire("group 2", &[req(0, "t"), req(1, "t")], &b2, LONG, |_| {})
            .await
            .unwrap()
    });
    while r.waiters().is_empty() {
        tokio::task::yield_now().await;
    }
    // A single job for the free `b` waits behind the group (which could use `b`)...
    let (r3, b) = (r.clone(), boards[1].name.clone());
    let (tx, rx) = tokio::sync::oneshot::channel();
    let single = tokio::spawn(async move {
        let h = r3
            .hold("job 3", &b, None, |d| {
                let _ = tx.send(d);
            })
            .await
            .unwrap();
        drop(h);
    });
    assert_eq!(
        rx.await.unwrap(),
        "busy: []; queued behind: [group 2]".to_string()
    );
    // ...while one for an unrelated board goes on at once.
    let c = r
        .hold("job 4", &boards[2].name, None, |_| panic!("waited"))
        .await
        .unwrap();
    drop(c);
    drop(held_a);
    let g = group.await.unwrap();
    assert_eq!(g.allocation.devices.len(), 2);
    assert!(!single.is_finished());
    drop(g);
    single.await.unwrap();
    assert!(r.holders().is_empty());
}

#[tokio::test]
async fn a_dropped_waiter_leaves_the_queue() {
    let boards = [board("a", "t")];
    let r = Reservations::new();
    let held = r
        .hold("job 1", &boards[0].name, None, |_| {})
        .await
        .unwrap();
    let r2 = r.clone();
    let b = boards[0].name.clone();
    let w = tokio::spawn(async move {
        let _ = r2.hold("job 2", &b, None, |_| {}).await;
    });
    while r.waiters().is_empty() {
        tokio::task::yield_now().await;
    }
    w.abort();
    let _ = w.await;
    assert!(r.waiters().is_empty());
    drop(held);
    assert!(r.holders().is_empty());
}

/// Two processes' reservations, as two instances over the same lock directory (another
/// open file conflicts in this process as in another one).
fn two_workers(dir: &std::path::Path) -> (Reservations, Reservations) {
    (
        Reservations::with_files(BoardFiles::for_state_dir(dir)),
        Reservations::with_files(BoardFiles::for_state_dir(dir)),
    )
}

#[tokio::test]
async fn a_board_locked_by_another_process_is_waited_for_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2) = two_workers(dir.path());
    let boards = [board("a", "t")];
    let held = p1
        .hold("job 1", &boards[0].name, None, |_| {})
        .await
        .unwrap();
    let pid = std::process::id();
    let e = p2
        .hold(
            "job 2",
            &boards[0].name,
            Some(Duration::from_millis(300)),
            |_| {},
        )
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!("not free within 300ms: busy: [a (job 1 (pid {pid}))]")
    );
    assert!(p2.waiters().is_empty() && p2.holders().is_empty());
    let (p3, b) = (p2.clone(), boards[0].name.clone());
    let (tx, rx) = tokio::sync::oneshot::channel();
    let waiter = tokio::spawn(async move {
        p3.hold("job 3", &b, None, |d| {
            let _ = tx.send(d);
        })
        .await
        .map(|r| r.allocation.devices.len())
    });
    assert_eq!(rx.await.unwrap(), format!("busy: [a (job 1 (pid {pid}))]"));
    drop(held);
    assert_eq!(waiter.await.unwrap().unwrap(), 1);
}

#[tokio::test]
async fn a_group_takes_a_free_board_of_its_type_or_none_while_others_lock_them() {
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2) = two_workers(dir.path());
    let boards = vec![board("a", "t"), board("b", "t"), board("c", "u")];
    // The other process holds `a`: a group wanting one `t` goes to `b`.
    let a = p1
        .hold("job 1", &boards[0].name, None, |_| {})
        .await
        .unwrap();
    let g = p2
        .acquire("group 2", &[req(0, "t")], &boards, LONG, |_| {
            panic!("waited")
        })
        .await
        .unwrap();
    assert_eq!(g.allocation.devices, [boards[1].name.clone()]);
    drop(g);
    // A group wanting `c` and two `t`s waits, holding nothing, while `a` is held.
    let (p3, b3) = (p2.clone(), boards.clone());
    let (tx, rx) = tokio::sync::oneshot::channel();
    let group = tokio::spawn(async move {
        p3.acquire(
            "group 3",
            &[req(0, "t"), req(1, "t"), req(2, "u")],
            &b3,
            LONG,
            |d| {
                let _ = tx.send(d);
            },
        )
        .await
        .map(|r| r.allocation.devices.len())
    });
    let pid = std::process::id();
    assert_eq!(rx.await.unwrap(), format!("busy: [a (job 1 (pid {pid}))]"));
    // Nothing partial: the first process can take `b` and `c` meanwhile (the group's
    // polls lock them only for an instant).
    for d in [&boards[1].name, &boards[2].name] {
        let h = p1
            .hold("job 4", d, Some(Duration::from_secs(5)), |_| {})
            .await
            .unwrap();
        drop(h);
    }
    drop(a);
    assert_eq!(group.await.unwrap().unwrap(), 3);
}

/// A master job is not held up by a local group waiting for a board the master job's
/// sibling holds (the three would wait on each other), and on release it goes before
/// local waiters.
#[tokio::test]
async fn master_jobs_go_before_local_waiters() {
    let boards = vec![board("a", "t"), board("b", "t")];
    let r = Reservations::new();
    let master_a = r
        .hold_with(
            "master job 1",
            &boards[0].name,
            None,
            Priority::Master,
            |_| {},
        )
        .await
        .unwrap();
    let (r2, b2) = (r.clone(), boards.clone());
    let group = tokio::spawn(async move {
        r2.acquire("group 2", &[req(0, "t"), req(1, "t")], &b2, LONG, |_| {})
            .await
            .unwrap()
    });
    while r.waiters().is_empty() {
        tokio::task::yield_now().await;
    }
    // The sibling's board is free: it is taken at once, the local group notwithstanding.
    let master_b = tokio::time::timeout(
        Duration::from_secs(5),
        r.hold_with(
            "master job 2",
            &boards[1].name,
            None,
            Priority::Master,
            |_| {},
        ),
    )
    .await
    .expect("a master job waited behind a local group")
    .unwrap();
    // A local single job queues for `a`, then a master job does: the master one is first.
    let (r3, a) = (r.clone(), boards[0].name.clone());
    let local = tokio::spawn(async move { r3.hold("job 3", &a, None, |_| {}).await.unwrap() });
    while r.waiters().len() < 2 {
        tokio::task::yield_now().await;
    }
    let (r4, a) = (r.clone(), boards[0].name.clone());
    let master = tokio::spawn(async move {
        r4.hold_with("master job 4", &a, None, Priority::Master, |_| {})
            .await
            .unwrap()
    });
    while r.waiters().len() < 3 {
        tokio::task::yield_now().await;
    }
    drop(master_a);
    let m4 = master.await.unwrap();
    assert_eq!(
        r.holders()[0],
        (boards[0].name.clone(), "master job 4".to_string())
    );
    assert!(!local.is_finished() && !group.is_finished());
    drop((m4, master_b));
    // Then the local waiters in their order: the group (earlier) before job 3.
    let g = group.await.unwrap();
    assert!(!local.is_finished());
    drop(g);
    drop(local.await.unwrap());
    assert!(r.waiters().is_empty());
}
