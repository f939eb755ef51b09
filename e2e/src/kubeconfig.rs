//! Kubeconfig files for the admin, the control-plane components, and
//! ServiceAccounts whose tokens the tests run FerroLB's binaries with.

use std::path::Path;

use anyhow::{Context, Result};

use crate::pki::{ClientIdentity, Pki};

/// Writes a kubeconfig for `client` talking to `server` (an `https://` URL).
pub fn write(path: &Path, server: &str, pki: &Pki, client: &ClientIdentity) -> Result<()> {
    let user = serde_json::json!({
        "client-certificate": pki.client_cert(client),
        "client-key": pki.client_key(client),
    });
    write_config(path, server, pki, client.user, user)
}

/// Writes a kubeconfig for `user` authenticating with a bearer `token` (a
/// ServiceAccount token from the TokenRequest API).
pub fn write_token(path: &Path, server: &str, pki: &Pki, user: &str, token: &str) -> Result<()> {
    write_config(
        path,
        server,
        pki,
        user,
        serde_json::json!({ "token": token }),
    )
}

fn write_config(
    path: &Path,
    server: &str,
    pki: &Pki,
    user_name: &str,
    user: serde_json::Value,
) -> Result<()> {
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "ferrolb-lab",
            "cluster": {
                "server": server,
                "certificate-authority": pki.ca_cert(),
            },
        }],
        "users": [{ "name": user_name, "user": user }],
        "contexts": [{
            "name": "ferrolb-lab",
            "context": { "cluster": "ferrolb-lab", "user": user_name },
        }],
        "current-context": "ferrolb-lab",
    });
    // JSON is YAML: every kubeconfig reader accepts it.
    let text = serde_json::to_string_pretty(&config).context("cannot encode a kubeconfig")?;
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}
