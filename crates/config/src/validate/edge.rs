//! Validation of the edge settings (see `crate::edge`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use super::{Ctx, Num, TrunkWithSources, clamp_u32};
use crate::edge::{
    Cac, CallAdmission, DigestAlgorithm, Keepalive, KeepaliveMethod, Nat, Registrar, RegistrarUser,
    Registration, Secret, TrunkAuth,
};
use crate::model::{Route, TrunkId};
use crate::raw::{
    RawCac, RawCallAdmission, RawKeepalive, RawKeepaliveMethod, RawNat, RawRegistrar, RawRoute,
    RawTrunk, S,
};

const CAC_LIMIT: u64 = 10_000_000;
const MAX_CONCURRENT: Num = Num {
    key: "max_concurrent_calls",
    default: 0,
    range: 0..=CAC_LIMIT,
};
const MAX_CPS: Num = Num {
    key: "max_calls_per_second",
    default: 0,
    range: 0..=CAC_LIMIT,
};
const MAX_REGS: Num = Num {
    key: "max_registrations",
    default: 0,
    range: 0..=CAC_LIMIT,
};
const KEEPALIVE_S: Num = Num {
    key: "interval_seconds",
    default: 30,
    range: 1..=3600,
};
const REG_EXPIRES_S: Num = Num {
    key: "expires_seconds",
    default: 3600,
    range: 60..=86_400,
};
const REG_RETRY_S: Num = Num {
    key: "retry_seconds",
    default: 30,
    range: 1..=3600,
};
const REG_MAX_RETRY_S: Num = Num {
    key: "max_retry_seconds",
    default: 600,
    range: 1..=86_400,
};
const MIN_EXPIRES_S: Num = Num {
    key: "min_expires_seconds",
    default: 60,
    range: 1..=86_400,
};
const MAX_EXPIRES_S: Num = Num {
    key: "max_expires_seconds",
    default: 3600,
    range: 1..=604_800,
};
const DEFAULT_EXPIRES_S: Num = Num {
    key: "default_expires_seconds",
    default: 3600,
    range: 1..=604_800,
};
const MAX_BINDINGS_TOTAL: Num = Num {
    key: "max_bindings_total",
    default: 100_000,
    range: 1..=10_000_000,
};
const NONCE_LIFETIME_S: Num = Num {
    key: "nonce_lifetime_seconds",
    default: 300,
    range: 10..=86_400,
};
const USER_MAX_BINDINGS: Num = Num {
    key: "max_bindings",
    default: 4,
    range: 1..=100,
};
const RETRY_AFTER_S: Num = Num {
    key: "retry_after_seconds",
    default: 30,
    range: 1..=3600,
};
const MAX_USERS: usize = 100_000;
const DEFAULT_EMERGENCY: [&str; 4] = ["112", "911", "999", "110"];

pub(super) fn cac(cx: &mut Ctx, raw: Option<&RawCac>, p: &str) -> Cac {
    let Some(r) = raw else {
        return Cac {
            reject_status: 503,
            ..Cac::default()
        };
    };
    let s = format!("{p}.cac");
    let reject_status = match &r.reject_status {
        None => 503,
        Some(v) if matches!(v.value, 503 | 486 | 480) => v.value as u16,
        Some(v) => {
            cx.err(
                v.referenced,
                format!("{s}.reject_status"),
                format!("{} is not allowed: use 503, 486 or 480", v.value),
            );
            503
        }
    };
    Cac {
        max_concurrent_calls: clamp_u32(cx.num(
            r.max_concurrent_calls.as_ref(),
            &s,
            &MAX_CONCURRENT,
        )),
        max_calls_per_second: clamp_u32(cx.num(r.max_calls_per_second.as_ref(), &s, &MAX_CPS)),
        max_registrations: clamp_u32(cx.num(r.max_registrations.as_ref(), &s, &MAX_REGS)),
        reject_status,
    }
}

pub(super) fn keepalive(cx: &mut Ctx, raw: &RawKeepalive, s: &str) -> Keepalive {
    let method = match raw.method.as_ref().map(|m| m.value) {
        None | Some(RawKeepaliveMethod::Options) => KeepaliveMethod::Options,
        Some(RawKeepaliveMethod::Crlf) => KeepaliveMethod::Crlf,
    };
    Keepalive {
        method,
        interval: Duration::from_secs(cx.num(raw.interval_seconds.as_ref(), s, &KEEPALIVE_S)),
    }
}

/// The edge fields of one trunk.
pub(super) struct TrunkEdge {
    pub auth: Option<TrunkAuth>,
    pub registration: Option<Registration>,
    pub challenge_inbound: bool,
    pub challenge_inbound_users: Vec<String>,
    pub keepalive: Option<Keepalive>,
    pub cac: Cac,
}

fn non_empty(cx: &mut Ctx, v: &S<String>, path: String, max: usize) {
    let n = v.value.chars().count();
    if n == 0 || n > max {
        cx.err(
            v.referenced,
            path,
            format!("must be 1..={max} characters long (got {n})"),
        );
    } else if v.value.chars().any(char::is_control) {
        cx.err(v.referenced, path, "must not contain control characters");
    }
}

pub(super) fn trunk(cx: &mut Ctx, t: &RawTrunk, p: &str) -> TrunkEdge {
    let auth = t.auth.as_ref().map(|a| {
        let ap = format!("{p}.auth");
        let a_loc = a.referenced;
        let a = &a.value;
        non_empty(cx, &a.username, format!("{ap}.username"), 128);
        // `password_env` wins when that variable is set; `password` is the
        // fallback (or the only source).
        let from_env = a
            .password_env
            .as_ref()
            .and_then(|var| std::env::var(&var.value).ok())
            .filter(|v| !v.is_empty());
        let password = match (from_env, &a.password, &a.password_env) {
            (Some(v), _, _) => Secret::new(v),
            (None, Some(pw), _) => {
                non_empty(cx, pw, format!("{ap}.password"), 256);
                Secret::new(pw.value.clone())
            }
            (None, None, Some(var)) => {
                cx.err(
                    var.referenced,
                    format!("{ap}.password_env"),
                    format!("environment variable `{}` is not set or empty (and no `password` fallback)", var.value),
                );
                Secret::new(String::new())
            }
            (None, None, None) => {
                cx.err(a_loc, ap.clone(), "give `password` or `password_env`");
                Secret::new(String::new())
            }
        };
        if let Some(r) = &a.realm {
            non_empty(cx, r, format!("{ap}.realm"), 256);
        }
        TrunkAuth {
            username: a.username.value.clone(),
            password,
            realm: a.realm.as_ref().map(|r| r.value.clone()),
        }
    });
    let registration = t.registration.as_ref().and_then(|r| {
        let rp = format!("{p}.registration");
        let loc = r.referenced;
        let r = &r.value;
        let expires = cx.num(r.expires_seconds.as_ref(), &rp, &REG_EXPIRES_S);
        let retry = cx.num(r.retry_seconds.as_ref(), &rp, &REG_RETRY_S);
        let max_retry = cx.num(r.max_retry_seconds.as_ref(), &rp, &REG_MAX_RETRY_S);
        if max_retry < retry {
            let at = r.max_retry_seconds.as_ref().map_or(loc, |v| v.referenced);
            cx.err(
                at,
                format!("{rp}.max_retry_seconds"),
                format!("{max_retry} is below retry_seconds ({retry})"),
            );
        }
        let enabled = r.enabled.as_ref().is_none_or(|e| e.value);
        if enabled && t.auth.is_none() {
            cx.err(
                loc,
                rp.clone(),
                "registration needs `auth` on the same trunk",
            );
        }
        enabled.then_some(Registration {
            expires_seconds: clamp_u32(expires),
            retry_seconds: clamp_u32(retry),
            max_retry_seconds: clamp_u32(max_retry.max(retry)),
        })
    });
    TrunkEdge {
        auth,
        registration,
        challenge_inbound: t.challenge_inbound.as_ref().is_some_and(|v| v.value),
        challenge_inbound_users: {
            let mut users: Vec<String> = Vec::new();
            for u in t.challenge_inbound_users.iter().flatten() {
                if !users.contains(&u.value) {
                    users.push(u.value.clone());
                }
            }
            users
        },
        keepalive: t
            .keepalive
            .as_ref()
            .map(|k| keepalive(cx, k, &format!("{p}.keepalive"))),
        cac: cac(cx, t.cac.as_ref(), p),
    }
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn user_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-_.!~*'()&=+$,;?/%".contains(c)
}

pub(super) fn registrar(
    cx: &mut Ctx,
    raw: Option<&S<RawRegistrar>>,
    trunks: &[TrunkWithSources],
) -> Option<Registrar> {
    let r = &raw?.value;
    let s = "registrar";
    let trunk = trunks
        .iter()
        .find(|(t, _)| t.name == r.trunk.value)
        .map(|(t, _)| t.id);
    if trunk.is_none() {
        cx.err(
            r.trunk.referenced,
            "registrar.trunk",
            format!("no trunk named `{}`", r.trunk.value),
        );
    }
    non_empty(cx, &r.realm, "registrar.realm".into(), 128);
    if r.realm.value.contains('"') || r.realm.value.contains('\\') {
        cx.err(
            r.realm.referenced,
            "registrar.realm",
            "must not contain `\"` or `\\`",
        );
    }
    if r.users.value.len() > MAX_USERS {
        cx.err(
            r.users.referenced,
            "registrar.users",
            format!("at most {MAX_USERS} users"),
        );
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut users = Vec::new();
    for (i, u) in r.users.value.iter().enumerate() {
        let up = format!("registrar.users[{i}]");
        let u = &u.value;
        let n = u.user.value.chars().count();
        if n == 0 || n > 64 || !u.user.value.chars().all(user_char) {
            cx.err(
                u.user.referenced,
                format!("{up}.user"),
                "must be 1..=64 characters of a SIP user part (letters, digits, -_.!~*'()&=+$,;?/%)",
            );
        }
        if let Some(first) = seen.insert(u.user.value.as_str(), i) {
            cx.err(
                u.user.referenced,
                format!("{up}.user"),
                format!(
                    "duplicate user `{}` (also registrar.users[{first}])",
                    u.user.value
                ),
            );
        }
        if !is_hex(&u.ha1_md5.value, 32) {
            cx.err(
                u.ha1_md5.referenced,
                format!("{up}.ha1_md5"),
                "must be 32 hex digits: MD5(user:realm:password)",
            );
        }
        if let Some(h) = &u.ha1_sha256
            && !is_hex(&h.value, 64)
        {
            cx.err(
                h.referenced,
                format!("{up}.ha1_sha256"),
                "must be 64 hex digits: SHA-256(user:realm:password)",
            );
        }
        users.push(RegistrarUser {
            user: u.user.value.clone(),
            ha1_md5: u.ha1_md5.value.to_ascii_lowercase(),
            ha1_sha256: u.ha1_sha256.as_ref().map(|h| h.value.to_ascii_lowercase()),
            max_bindings: clamp_u32(cx.num(u.max_bindings.as_ref(), &up, &USER_MAX_BINDINGS)),
        });
    }
    let algorithms = match &r.algorithms {
        None => vec![DigestAlgorithm::Md5, DigestAlgorithm::Sha256],
        Some(list) => {
            if list.value.is_empty() {
                cx.err(
                    list.referenced,
                    "registrar.algorithms",
                    "at least one algorithm is required",
                );
            }
            let mut out = Vec::new();
            for (j, a) in list.value.iter().enumerate() {
                let alg = if a.value.eq_ignore_ascii_case("md5") {
                    DigestAlgorithm::Md5
                } else if a.value.eq_ignore_ascii_case("sha-256") {
                    DigestAlgorithm::Sha256
                } else {
                    cx.err(
                        a.referenced,
                        format!("registrar.algorithms[{j}]"),
                        format!("unknown algorithm `{}`; use md5 or sha-256", a.value),
                    );
                    continue;
                };
                if out.contains(&alg) {
                    cx.err(
                        a.referenced,
                        format!("registrar.algorithms[{j}]"),
                        "listed twice",
                    );
                } else {
                    out.push(alg);
                }
            }
            out
        }
    };
    let min = cx.num(r.min_expires_seconds.as_ref(), s, &MIN_EXPIRES_S);
    let max = cx.num(r.max_expires_seconds.as_ref(), s, &MAX_EXPIRES_S);
    let default = cx.num(r.default_expires_seconds.as_ref(), s, &DEFAULT_EXPIRES_S);
    if !(min <= default && default <= max) {
        let at = r
            .default_expires_seconds
            .as_ref()
            .or(r.max_expires_seconds.as_ref())
            .or(r.min_expires_seconds.as_ref())
            .map_or(raw?.referenced, |v| v.referenced);
        cx.err(
            at,
            "registrar",
            format!("need min_expires_seconds ({min}) <= default_expires_seconds ({default}) <= max_expires_seconds ({max})"),
        );
    }
    let database_path = r.database_path.as_ref().map(|p| {
        if p.value.trim().is_empty() {
            cx.err(p.referenced, "registrar.database_path", "must not be empty");
        }
        PathBuf::from(&p.value)
    });
    Some(Registrar {
        trunk: trunk.unwrap_or(TrunkId(u16::MAX)),
        realm: r.realm.value.clone(),
        users,
        algorithms,
        min_expires_seconds: clamp_u32(min),
        max_expires_seconds: clamp_u32(max),
        default_expires_seconds: clamp_u32(default),
        max_bindings_total: clamp_u32(cx.num(
            r.max_bindings_total.as_ref(),
            s,
            &MAX_BINDINGS_TOTAL,
        )),
        nonce_lifetime_seconds: clamp_u32(cx.num(
            r.nonce_lifetime_seconds.as_ref(),
            s,
            &NONCE_LIFETIME_S,
        )),
        database_path,
    })
}

/// Rules linking trunks and routes to the registrar.
pub(super) fn cross(
    cx: &mut Ctx,
    raw_trunks: &[S<RawTrunk>],
    raw_routes: &[S<crate::raw::RawRoute>],
    registrar: Option<&Registrar>,
    routes: &[Route],
) {
    for (i, t) in raw_trunks.iter().enumerate() {
        let on = t.value.challenge_inbound.as_ref().filter(|c| c.value);
        if let Some(c) = on
            && registrar.is_none()
        {
            cx.err(
                c.referenced,
                format!("trunks[{i}].challenge_inbound"),
                "needs a `registrar` section (its users and realm are the credentials checked)",
            );
        }
        let users = t
            .value
            .challenge_inbound_users
            .as_deref()
            .unwrap_or_default();
        let is_registrar_trunk = registrar.is_some_and(|r| usize::from(r.trunk.0) == i);
        match (on, registrar) {
            (None, _) => {
                if let Some(u) = users.first() {
                    cx.err(
                        u.referenced,
                        format!("trunks[{i}].challenge_inbound_users"),
                        "has no effect without `challenge_inbound: true`",
                    );
                }
            }
            (Some(c), Some(_)) if users.is_empty() && !is_registrar_trunk => cx.err(
                c.referenced,
                format!("trunks[{i}].challenge_inbound"),
                "name the registrar users this trunk authenticates as in `challenge_inbound_users` \
                 (only the registrar's own trunk may default to all of them)",
            ),
            (Some(_), Some(r)) => {
                for (j, u) in users.iter().enumerate() {
                    if r.user(&u.value).is_none() {
                        cx.err(
                            u.referenced,
                            format!("trunks[{i}].challenge_inbound_users[{j}]"),
                            format!("no registrar user named `{}`", u.value),
                        );
                    }
                }
            }
            (Some(_), None) => {}
        }
    }
    for (i, (raw, route)) in raw_routes.iter().zip(routes).enumerate() {
        let Some(tr) = raw.value.to_registered.as_ref().filter(|v| v.value) else {
            continue;
        };
        match registrar {
            None => cx.err(
                tr.referenced,
                format!("routes[{i}].to_registered"),
                "needs a `registrar` section",
            ),
            Some(r) if r.trunk != route.to_trunk => cx.err(
                tr.referenced,
                format!("routes[{i}].to_registered"),
                "to_trunk must be the registrar's trunk",
            ),
            Some(_) => {}
        }
    }
}

pub(super) fn to_registered(r: &RawRoute) -> bool {
    r.to_registered.as_ref().is_some_and(|v| v.value)
}

pub(super) fn nat(cx: &mut Ctx, raw: Option<RawNat>) -> Nat {
    let raw = raw.unwrap_or_default();
    Nat {
        detect: raw.detect.is_none_or(|d| d.value),
        keepalive: match &raw.keepalive {
            Some(k) => keepalive(cx, k, "nat.keepalive"),
            None => Keepalive {
                method: KeepaliveMethod::Options,
                interval: Duration::from_secs(KEEPALIVE_S.default),
            },
        },
    }
}

pub(super) fn call_admission(cx: &mut Ctx, raw: Option<RawCallAdmission>) -> CallAdmission {
    let raw = raw.unwrap_or_default();
    let emergency_numbers = match &raw.emergency_numbers {
        None => DEFAULT_EMERGENCY.iter().map(|s| (*s).to_owned()).collect(),
        Some(list) => {
            let mut out = Vec::new();
            for (j, n) in list.iter().enumerate() {
                let ok = !n.value.is_empty()
                    && n.value.len() <= 32
                    && n.value
                        .chars()
                        .all(|c| matches!(c, '0'..='9' | '+' | '*' | '#'));
                if ok {
                    out.push(n.value.clone());
                } else {
                    cx.err(
                        n.referenced,
                        format!("call_admission.emergency_numbers[{j}]"),
                        format!("`{}` must be 1..=32 characters of [0-9+*#]", n.value),
                    );
                }
            }
            out
        }
    };
    CallAdmission {
        emergency_numbers,
        retry_after_seconds: clamp_u32(cx.num(
            raw.retry_after_seconds.as_ref(),
            "call_admission",
            &RETRY_AFTER_S,
        )),
    }
}

#[cfg(test)]
mod tests {
    use crate::{Cac, Config, DigestAlgorithm, KeepaliveMethod, Problem, TrunkId, load_str};

    const BASE: &str = "\
zones:
  - name: inside
    sip_address: 127.0.0.1
trunks:
  - name: pbx
    zone: inside
    members:
      - address: 127.0.0.10
  - name: carrier
    zone: inside
    members:
      - address: 127.0.0.20
routes:
  - name: all
    to_trunk: pbx
";

    fn ok(yaml: &str) -> Config {
        load_str(yaml, "t.yaml").unwrap_or_else(|e| panic!("{e}\n{yaml}"))
    }

    fn problems(yaml: &str) -> Vec<Problem> {
        match load_str(yaml, "t.yaml") {
            Ok(_) => panic!("expected an error for:\n{yaml}"),
            Err(e) => e.problems().to_vec(),
        }
    }

    #[track_caller]
    fn expect_one(yaml: &str, line: u64, path: &str, msg: &str) {
        let ps = problems(yaml);
        assert_eq!(ps.len(), 1, "{ps:#?}\n{yaml}");
        assert_eq!((ps[0].line, ps[0].path.as_str()), (line, path), "{ps:#?}");
        assert!(
            ps[0].message.contains(msg),
            "{:?} lacks {msg:?}",
            ps[0].message
        );
    }

    fn with_carrier(extra: &str) -> String {
        BASE.replace(
            "      - address: 127.0.0.20\n",
            &format!("      - address: 127.0.0.20\n{extra}"),
        )
    }

    #[test]
    fn defaults_without_edge_sections() {
        let c = ok(BASE);
        assert!(c.registrar().is_none());
        assert!(c.nat().detect);
        assert_eq!(c.nat().keepalive.method, KeepaliveMethod::Options);
        assert_eq!(
            c.call_admission().emergency_numbers,
            ["112", "911", "999", "110"]
        );
        assert!(c.call_admission().is_emergency("112"));
        assert_eq!(c.call_admission().retry_after_seconds, 30);
        let t = &c.trunks()[1];
        assert!(t.auth.is_none() && t.registration.is_none() && t.keepalive.is_none());
        assert!(!t.challenge_inbound);
        assert!(t.cac.is_unlimited() && t.cac.reject_status == 503);
        assert_eq!(
            c.zones()[0].cac,
            Cac {
                reject_status: 503,
                ..Cac::default()
            }
        );
        assert!(!c.routes()[0].to_registered);
    }

    #[test]
    fn trunk_auth_registration_keepalive_cac() {
        let c = ok(&with_carrier(
            "    auth: {username: u1, password: pw}
    registration: {expires_seconds: 120, retry_seconds: 2, max_retry_seconds: 8}
    keepalive: {method: crlf, interval_seconds: 5}
    cac: {max_concurrent_calls: 3, max_calls_per_second: 2, reject_status: 486}
",
        ));
        let t = &c.trunks()[1];
        let a = t.auth.as_ref().unwrap();
        assert_eq!((a.username.as_str(), a.password.expose()), ("u1", "pw"));
        assert!(
            !format!("{t:?}").contains("pw"),
            "the password never prints"
        );
        let r = t.registration.unwrap();
        assert_eq!(
            (r.expires_seconds, r.retry_seconds, r.max_retry_seconds),
            (120, 2, 8)
        );
        assert_eq!(t.keepalive.unwrap().method, KeepaliveMethod::Crlf);
        assert_eq!(
            (
                t.cac.max_concurrent_calls,
                t.cac.max_calls_per_second,
                t.cac.reject_status
            ),
            (3, 2, 486)
        );
        // An unset variable falls back to `password`.
        let c = ok(&with_carrier(
            "    auth: {username: u1, password_env: PALISADE_TEST_SURELY_UNSET_VAR, password: fb}\n",
        ));
        assert_eq!(c.trunks()[1].auth.as_ref().unwrap().password.expose(), "fb");
        // PATH is always set: the environment wins.
        let c = ok(&with_carrier(
            "    auth: {username: u1, password_env: PATH, password: fb}\n",
        ));
        assert_ne!(c.trunks()[1].auth.as_ref().unwrap().password.expose(), "fb");
    }

    #[test]
    fn trunk_edge_errors_are_located() {
        expect_one(
            &with_carrier("    registration: {expires_seconds: 120}\n"),
            13,
            "trunks[1].registration",
            "needs `auth`",
        );
        expect_one(
            &with_carrier("    auth: {username: u1}\n"),
            13,
            "trunks[1].auth",
            "give `password` or `password_env`",
        );
        expect_one(
            &with_carrier(
                "    auth: {username: u1, password_env: PALISADE_TEST_SURELY_UNSET_VAR}\n",
            ),
            13,
            "trunks[1].auth.password_env",
            "not set",
        );
        expect_one(
            &with_carrier("    cac: {reject_status: 404}\n"),
            13,
            "trunks[1].cac.reject_status",
            "503, 486 or 480",
        );
        expect_one(
            &with_carrier("    keepalive: {interval_seconds: 0}\n"),
            13,
            "trunks[1].keepalive.interval_seconds",
            "out of range",
        );
        expect_one(
            &with_carrier("    challenge_inbound: true\n"),
            13,
            "trunks[1].challenge_inbound",
            "needs a `registrar`",
        );
    }

    const REGISTRAR: &str = "registrar:
  trunk: pbx
  realm: r.example
  users:
    - user: alice
      ha1_md5: 0123456789ABCDEF0123456789abcdef
";

    #[test]
    fn registrar_section() {
        let yaml = format!("{BASE}{REGISTRAR}");
        let c = ok(&yaml);
        let r = c.registrar().unwrap();
        assert_eq!(r.trunk, TrunkId(0));
        assert_eq!(
            r.user("alice").unwrap().ha1_md5,
            "0123456789abcdef0123456789abcdef"
        );
        assert_eq!(r.user("alice").unwrap().max_bindings, 4);
        assert_eq!(
            r.algorithms,
            [DigestAlgorithm::Md5, DigestAlgorithm::Sha256]
        );
        assert_eq!(
            (
                r.min_expires_seconds,
                r.default_expires_seconds,
                r.max_expires_seconds
            ),
            (60, 3600, 3600)
        );
        assert!(r.database_path.is_none());
        let routed = yaml.replace(
            "    to_trunk: pbx\n",
            "    to_trunk: pbx\n    to_registered: true\n",
        );
        assert!(ok(&routed).routes()[0].to_registered);
    }

    #[test]
    fn registrar_errors_are_located() {
        let yaml = format!("{BASE}{REGISTRAR}");
        expect_one(
            &yaml.replace("trunk: pbx\n  realm", "trunk: nope\n  realm"),
            17,
            "registrar.trunk",
            "no trunk named",
        );
        expect_one(
            &yaml.replace("0123456789ABCDEF0123456789abcdef", "xyz"),
            21,
            "registrar.users[0].ha1_md5",
            "32 hex",
        );
        expect_one(
            &format!("{yaml}      ha1_sha256: abc\n"),
            22,
            "registrar.users[0].ha1_sha256",
            "64 hex",
        );
        expect_one(
            &format!("{yaml}    - user: alice\n      ha1_md5: 0123456789abcdef0123456789abcdef\n"),
            22,
            "registrar.users[1].user",
            "duplicate user",
        );
        expect_one(
            &format!("{yaml}  algorithms: [md5, sha-512]\n"),
            22,
            "registrar.algorithms[1]",
            "unknown algorithm",
        );
        expect_one(
            &format!("{yaml}  min_expires_seconds: 600\n  default_expires_seconds: 60\n"),
            23,
            "registrar",
            "min_expires_seconds (600) <= default_expires_seconds (60)",
        );
        // to_registered without a registrar, and toward another trunk.
        let routed = BASE.replace(
            "    to_trunk: pbx\n",
            "    to_trunk: pbx\n    to_registered: true\n",
        );
        expect_one(
            &routed,
            16,
            "routes[0].to_registered",
            "needs a `registrar`",
        );
        let other = format!("{BASE}{REGISTRAR}").replace(
            "    to_trunk: pbx\n",
            "    to_trunk: carrier\n    to_registered: true\n",
        );
        expect_one(&other, 16, "routes[0].to_registered", "registrar's trunk");
        // challenge_inbound on another trunk than the registrar's names its users.
        let challenged = format!(
            "{}{REGISTRAR}",
            with_carrier("    challenge_inbound: true\n")
        );
        expect_one(
            &challenged,
            13,
            "trunks[1].challenge_inbound",
            "challenge_inbound_users",
        );
        let named = format!(
            "{}{REGISTRAR}",
            with_carrier(
                "    challenge_inbound: true\n    challenge_inbound_users: [alice, bob]\n"
            )
        );
        expect_one(
            &named,
            14,
            "trunks[1].challenge_inbound_users[1]",
            "no registrar user named `bob`",
        );
        let c = ok(&named.replace(", bob]", ", alice]"));
        assert_eq!(c.trunks()[1].challenge_inbound_users, ["alice"]);
        expect_one(
            &format!(
                "{}{REGISTRAR}",
                with_carrier("    challenge_inbound_users: [alice]\n")
            ),
            13,
            "trunks[1].challenge_inbound_users",
            "no effect",
        );
        // The registrar's own trunk defaults to every registrar user.
        let own = format!("{BASE}{REGISTRAR}").replace(
            "      - address: 127.0.0.10\n",
            "      - address: 127.0.0.10\n    challenge_inbound: true\n",
        );
        assert!(ok(&own).trunks()[0].challenge_inbound_users.is_empty());
        expect_one(
            &format!("{BASE}call_admission:\n  emergency_numbers: [\"11a\"]\n"),
            17,
            "call_admission.emergency_numbers[0]",
            "[0-9+*#]",
        );
    }
}
