//! npm packages for the tests that drive JavaScript (the InsForge SDK, the dashboard in a
//! browser): `npm ci` from the directory's package-lock.json, once, when a package is missing.

use std::{path::Path, process::Command, sync::Mutex};

/// Installs `dir`'s packages unless every one of `packages` is already there.
pub fn ensure(dir: &Path, packages: &[&str]) {
    static ONCE: Mutex<()> = Mutex::new(());
    let _guard = ONCE.lock().unwrap_or_else(|e| e.into_inner());
    match Command::new("node").arg("--version").output() {
        Ok(o) if o.status.success() => {}
        _ => panic!("`node` not found: these tests need Node.js 20+ and npm on PATH"),
    }
    let installed = packages.iter().all(|p| {
        dir.join("node_modules")
            .join(p)
            .join("package.json")
            .exists()
    });
    if installed {
        return;
    }
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("`npm` not found ({e}): these tests need Node.js 20+ and npm"));
    assert!(
        out.status.success(),
        "npm ci in {} failed:\n{}\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
