//! Publishing the reconciler's [`Notice`]s as `events.k8s.io` Events on Services.

use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::reconcile::Notice;

/// The reporting controller named in every Event.
pub const CONTROLLER: &str = "ferrolb.io/controller";

/// Publishes Events as this replica.
#[derive(Clone)]
pub struct Publisher {
    client: Client,
    reporter: Reporter,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("reporter", &self.reporter)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// A publisher reporting as `instance` (the pod name).
    pub fn new(client: Client, instance: String) -> Self {
        Self {
            client,
            reporter: Reporter {
                controller: CONTROLLER.to_owned(),
                instance: Some(instance),
            },
        }
    }

    /// Publishes one Event.
    pub async fn publish(&self, notice: &Notice) -> Result<(), kube::Error> {
        // A fresh recorder per Event: the recorder's series cache keys on the reason
        // and not the message, so a second AllocationFailed with a new reason text
        // would otherwise only bump the count of the first and show its stale text.
        // The reconciler already publishes each distinct message once.
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        recorder
            .publish(
                &Event {
                    type_: if notice.warning {
                        EventType::Warning
                    } else {
                        EventType::Normal
                    },
                    reason: notice.reason.to_owned(),
                    note: Some(truncate(&notice.note, 1000)),
                    action: action(notice.reason).to_owned(),
                    secondary: None,
                },
                &notice.reference,
            )
            .await
    }
}

fn action(reason: &str) -> &'static str {
    match reason {
        crate::reconcile::reasons::IP_RELEASED => "Release",
        crate::reconcile::reasons::ALIAS_ANNOTATION => "ReadAnnotations",
        _ => "Allocate",
    }
}

/// Events notes are limited to 1 kB; cut on a character boundary.
fn truncate(note: &str, max: usize) -> String {
    if note.len() <= max {
        return note.to_owned();
    }
    let mut end = max - 3;
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &note[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_notes_are_cut_to_the_api_limit() {
        let long = "é".repeat(800);
        let cut = truncate(&long, 1000);
        assert!(cut.len() <= 1000 && cut.ends_with("..."));
        assert_eq!(truncate("short", 1000), "short");
    }
}
