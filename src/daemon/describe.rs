//! The text of `urun --policy`.

use super::{Helper, EXIT_MAX_RUNTIME};
use crate::policy::forced;
use crate::policy::{NetworkMode, PullMode};
use crate::system::Caller;

impl Helper {
    pub(super) fn describe(&self, caller: &Caller) -> String {
        let p = &self.policy;
        let l = self.limits_for(caller);
        let list = |v: &[crate::policy::Pattern]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.iter()
                    .map(|p| p.0.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let mut t = format!(
            "urun policy for {} (uid {}), from {}:\n\nYour limits:\n",
            caller.display_name(),
            caller.uid,
            self.policy_path.display()
        );
        for (k, v) in [
            ("memory", l.memory.to_string()),
            ("cpus", l.cpus.0.to_string()),
            ("pids", l.pids.0.to_string()),
            ("nofile", l.nofile.0.to_string()),
            ("nproc", l.nproc.0.to_string()),
            ("tmpfs_size", l.tmpfs_size.to_string()),
            (
                "max_runtime",
                format!(
                    "{} (then killed, exit status {EXIT_MAX_RUNTIME})",
                    l.max_runtime
                ),
            ),
            ("max_concurrent", l.max_concurrent.0.to_string()),
        ] {
            t.push_str(&format!("  {k} = {v}\n"));
        }
        t.push_str(&format!(
            "\nImages you may run: {}{}\n",
            list(&p.images.allow),
            if p.images.require_digest {
                " (pinned by digest only: NAME@sha256:...)"
            } else {
                ""
            }
        ));
        t.push_str(match p.images.volumes {
            crate::policy::ImageVolumes::Tmpfs => {
                "Image VOLUMEs: each an empty tmpfs of tmpfs_size (never a Docker volume)\n"
            }
            crate::policy::ImageVolumes::Refuse => "Images that declare a VOLUME: refused\n",
        });
        t.push_str(&match p.pull.mode {
            PullMode::Never => "Missing images: not pulled (ask your administrator)\n".to_string(),
            PullMode::Missing => {
                format!("Missing images: pulled from {}\n", list(&p.pull.registries))
            }
        });
        t.push_str(match p.network.mode {
            NetworkMode::None => "Network: none (only lo)\n",
            NetworkMode::Isolated => {
                "Network: isolated bridge urun-isolated (containers cannot reach each other)\n"
            }
        });
        t.push_str(&if p.mounts.workdir {
            format!(
                "Your working directory (-v \"$PWD\":DIR, --here): may be mounted below {} ({})\n",
                p.mounts.root_strings().join(", "),
                match p.mounts.access {
                    crate::policy::MountAccess::Owner => "directories you own",
                    crate::policy::MountAccess::Mode => "directories your permissions allow",
                }
            )
        } else {
            "Your working directory (-v, --here): not mounted (policy mounts.workdir = false)\n"
                .to_string()
        });
        t.push_str(match p.identity.groups {
            crate::policy::GroupsMode::Primary => "Supplementary groups: none\n",
            crate::policy::GroupsMode::Caller => {
                "Supplementary groups: yours, minus the denied ones (identity.deny_groups)\n"
            }
        });
        t.push_str(&format!(
            "Environment variables you may pass: {}\n\nAlways forced, whatever you ask:\n",
            list(&p.env.allow)
        ));
        for (k, v) in forced::FORCED {
            t.push_str(&format!("  {k}: {v}\n"));
        }
        t
    }
}
