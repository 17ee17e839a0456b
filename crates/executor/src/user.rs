//! USER resolution through the rootfs's /etc/passwd and /etc/group, with runc's rules:
//! `name`, `uid`, `name:group`, `uid:gid`; a numeric uid missing from passwd is allowed;
//! supplementary groups come from /etc/group only when no group is given explicitly.

use std::path::Path;

use crate::error::ExecError;

/// Who the step runs as.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Identity {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) groups: Vec<u32>,
    pub(crate) home: String,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
                home: f.get(5).map(|s| s.to_string()).unwrap_or_default(),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            Some(GroupEntry {
                name: f.first()?.to_string(),
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Resolves `user` (USER's syntax) against the files of the rootfs mounted at `root`.
/// Missing /etc/passwd or /etc/group read as empty, as runc does.
pub(crate) fn resolve_user(root: &Path, user: &str) -> Result<Identity, ExecError> {
    let read = |rel: &str| std::fs::read_to_string(root.join(rel)).unwrap_or_default();
    resolve_user_in(&read("etc/passwd"), &read("etc/group"), user)
}

pub(crate) fn resolve_user_in(
    passwd: &str,
    group: &str,
    user: &str,
) -> Result<Identity, ExecError> {
    let users = parse_passwd(passwd);
    let groups = parse_group(group);
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let entry = users.iter().find(|e| e.name == user_part).or_else(|| {
        let uid: u32 = user_part.parse().ok()?;
        users.iter().find(|e| e.uid == uid)
    });
    let (uid, mut gid, name, home) = match (entry, user_part.parse::<u32>()) {
        (Some(e), _) => (e.uid, e.gid, Some(e.name.clone()), e.home.clone()),
        (None, Ok(uid)) => (uid, 0, None, "/".to_owned()),
        (None, Err(_)) => {
            return Err(ExecError::UserNotFound {
                user: user.to_owned(),
            })
        }
    };
    let mut supplementary = Vec::new();
    match group_part {
        Some(g) if !g.is_empty() => {
            gid = match groups.iter().find(|e| e.name == g) {
                Some(e) => e.gid,
                None => g.parse().map_err(|_| ExecError::GroupNotFound {
                    group: g.to_owned(),
                })?,
            };
        }
        _ => {
            if let Some(name) = &name {
                for g in &groups {
                    if g.members.iter().any(|m| m == name) && !supplementary.contains(&g.gid) {
                        supplementary.push(g.gid);
                    }
                }
            }
        }
    }
    if !supplementary.contains(&gid) {
        supplementary.insert(0, gid);
    }
    let home = if home.is_empty() {
        "/".to_owned()
    } else {
        home
    };
    Ok(Identity {
        uid,
        gid,
        groups: supplementary,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\napp:x:1000:\nstaff:x:50:app,other\nwheel:x:10:root\n";

    #[test]
    fn name_gets_primary_and_supplementary_groups() {
        let id = resolve_user_in(PASSWD, GROUP, "app").unwrap();
        assert_eq!(
            id,
            Identity {
                uid: 1000,
                gid: 1000,
                groups: vec![1000, 50],
                home: "/home/app".into()
            }
        );
    }

    #[test]
    fn explicit_group_drops_supplementary_groups() {
        let id = resolve_user_in(PASSWD, GROUP, "app:staff").unwrap();
        assert_eq!((id.uid, id.gid, id.groups), (1000, 50, vec![50]));
        let id = resolve_user_in(PASSWD, GROUP, "1000:7").unwrap();
        assert_eq!((id.uid, id.gid), (1000, 7));
    }

    #[test]
    fn numeric_uid_missing_from_passwd_is_allowed() {
        let id = resolve_user_in(PASSWD, GROUP, "4242").unwrap();
        assert_eq!((id.uid, id.gid, id.home.as_str()), (4242, 0, "/"));
    }

    #[test]
    fn empty_user_is_root() {
        let id = resolve_user_in(PASSWD, GROUP, "").unwrap();
        assert_eq!(
            (id.uid, id.gid, id.groups, id.home.as_str()),
            (0, 0, vec![0, 10], "/root")
        );
    }

    #[test]
    fn unknown_names_are_errors() {
        assert!(matches!(
            resolve_user_in(PASSWD, GROUP, "nobody"),
            Err(ExecError::UserNotFound { user }) if user == "nobody"
        ));
        assert!(matches!(
            resolve_user_in(PASSWD, GROUP, "app:nogroup"),
            Err(ExecError::GroupNotFound { group }) if group == "nogroup"
        ));
    }
}
