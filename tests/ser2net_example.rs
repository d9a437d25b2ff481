//! `ser2net/ser2net.yaml` and `ser2net/ser2net.conf` are what `labd ser2net-config` writes for
//! the example inventory (`LABD_REGENERATE_FIXTURES=1` rewrites them).

use std::path::PathBuf;

use labd::inventory::Inventory;
use labd::ser2net::{Format, render};

#[test]
fn examples_are_in_sync() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let inv = Inventory::load(&repo.join("udev-rules/example-inventory.toml")).unwrap();
    for (file, format) in [
        ("ser2net.yaml", Format::Yaml),
        ("ser2net.conf", Format::Legacy),
    ] {
        let path = repo.join("ser2net").join(file);
        let text = render(&inv, format);
        if std::env::var_os("LABD_REGENERATE_FIXTURES").is_some() {
            std::fs::write(&path, &text).unwrap();
        }
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            text,
            "{} is stale: labd ser2net-config -c udev-rules/example-inventory.toml",
            path.display()
        );
    }
}
