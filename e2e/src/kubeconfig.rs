//! Kubeconfig files for the admin and the control-plane components.

use std::path::Path;

use anyhow::{Context, Result};

use crate::pki::{ClientIdentity, Pki};

/// Writes a kubeconfig for `client` talking to `server` (an `https://` URL).
pub fn write(path: &Path, server: &str, pki: &Pki, client: &ClientIdentity) -> Result<()> {
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
        "users": [{
            "name": client.user,
            "user": {
                "client-certificate": pki.client_cert(client),
                "client-key": pki.client_key(client),
            },
        }],
        "contexts": [{
            "name": "ferrolb-lab",
            "context": { "cluster": "ferrolb-lab", "user": client.user },
        }],
        "current-context": "ferrolb-lab",
    });
    // JSON is YAML: every kubeconfig reader accepts it.
    let text = serde_json::to_string_pretty(&config).context("cannot encode a kubeconfig")?;
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}
