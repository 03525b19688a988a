//! Digest authentication in the engine: checking credentials of REGISTERs
//! and of INVITEs from trunks with `challenge_inbound` against the
//! registrar's users (stateless HMAC nonces, nonce counts, `stale`), and
//! answering a carrier's 401/407 to our INVITE with the trunk's credentials.
//!
//! The same challenge goes out for an unknown user and a wrong password,
//! so the answers never tell which users exist (enumeration by svwar).

use std::sync::Arc;
use std::time::Instant;

use palisade_digest::{
    Algorithm, Challenge, Credentials, NonceCheck, ServerExpect, client_credentials, verify_request,
};
use palisade_sip::{HeaderName, Message};

use super::edge::{EdgeEvent, MAX_TRACKED_NONCES};
use super::{CallTimer, Engine, TimerKey};
use crate::{CallRef, Flow};

/// The outcome of checking a request's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum AuthResult {
    /// Valid credentials of this user.
    Ok(String),
    /// No credentials for our realm: challenge.
    Missing,
    /// Valid response but an old nonce (or a replayed count): challenge with stale=true.
    Stale,
    /// Wrong password, unknown user, forged nonce: challenge, and count.
    Failed(String),
}

/// Which users' credentials a request may carry.
#[derive(Debug, Clone, Copy)]
pub(super) enum UserRule<'a> {
    /// Only this user (the To user of a REGISTER).
    Exactly(&'a str),
    /// One of these (a trunk's `challenge_inbound_users`); empty: any
    /// registrar user.
    AnyOf(&'a [String]),
}

impl UserRule<'_> {
    fn allows(&self, user: &str) -> bool {
        match self {
            UserRule::Exactly(u) => *u == user,
            UserRule::AnyOf(list) => list.is_empty() || list.iter().any(|u| u == user),
        }
    }
}

/// The challenge to answer among `msg`'s `header`s: for `realm` (any
/// realm when `None`), SHA-256 preferred over MD5 when the server offers
/// both (RFC 8760 section 2.4: the client uses the strongest it supports),
/// else the first one.
pub(super) fn best_challenge(
    msg: &Message,
    header: HeaderName,
    realm: Option<&str>,
) -> Option<Challenge> {
    let mut best: Option<Challenge> = None;
    for ch in msg
        .headers()
        .filter(|h| h.name == header)
        .filter_map(|h| h.value_str().ok())
        .filter_map(|v| Challenge::parse(v).ok())
        .filter(|ch| realm.is_none_or(|r| r == ch.realm))
    {
        let stronger = ch.algorithm == Algorithm::Sha256
            && best
                .as_ref()
                .is_none_or(|b| b.algorithm != Algorithm::Sha256);
        if best.is_none() || stronger {
            best = Some(ch);
        }
    }
    best
}

fn algorithm(a: palisade_config::DigestAlgorithm) -> Algorithm {
    match a {
        palisade_config::DigestAlgorithm::Md5 => Algorithm::Md5,
        palisade_config::DigestAlgorithm::Sha256 => Algorithm::Sha256,
    }
}

impl Engine {
    /// Checks the `Authorization` (REGISTER) or `Proxy-Authorization`
    /// (INVITE) credentials of `msg`: a user `users` allows, our nonce,
    /// `qop=auth` (our challenges always offer it, so the RFC 2069 form,
    /// which has no nonce count to stop replays, is refused), the digest
    /// `uri` equal to the Request-URI, the digest itself, and a nonce count
    /// above any seen for that nonce.
    pub(super) fn check_credentials(
        &mut self,
        now: Instant,
        msg: &Message,
        header: HeaderName,
        users: UserRule<'_>,
    ) -> AuthResult {
        let cfg = Arc::clone(&self.cfg);
        let Some(reg) = cfg.registrar() else {
            return AuthResult::Missing;
        };
        let method = msg.method().map_or("", |m| m.as_str());
        // The first Digest credential for our realm.
        let creds = msg
            .headers()
            .filter(|h| h.name == header)
            .filter_map(|h| h.value_str().ok())
            .filter_map(|v| Credentials::parse(v).ok())
            .find(|c| c.realm == reg.realm);
        let Some(c) = creds else {
            return AuthResult::Missing;
        };
        let user = c.username.clone();
        let secs = self.edge.nonce_secs(now);
        let nonce = self.edge.nonces.check(&c.nonce, secs, &reg.realm);
        let ha1 = reg.user(&c.username).and_then(|u| match c.algorithm {
            Algorithm::Md5 => Some(u.ha1_md5.as_str()),
            Algorithm::Sha256 => u.ha1_sha256.as_deref(),
        });
        let allowed_alg = reg.algorithms.iter().any(|a| algorithm(*a) == c.algorithm);
        let user_ok = users.allows(&c.username);
        // The digest is computed even for unknown users (against a dummy
        // HA1) so the work does not tell users apart.
        let dummy = "0".repeat(c.algorithm.hex_len());
        let ruri = msg.request_uri_str().unwrap_or_default();
        let expect = ServerExpect {
            method,
            // The digest covers the `uri` the client wrote; it must name the
            // Request-URI's resource, but phones write it in their own way
            // (parameters dropped or re-cased, a default port spelt out).
            request_uri: if same_resource(&c.uri, ruri) {
                &c.uri
            } else {
                ruri
            },
            qop_offered: true,
        };
        let digest_ok = verify_request(&c, ha1.unwrap_or(&dummy), &expect).is_ok() && ha1.is_some();
        if nonce == NonceCheck::Invalid || !digest_ok || !allowed_alg || !user_ok {
            return AuthResult::Failed(user);
        }
        if nonce == NonceCheck::Stale {
            return AuthResult::Stale;
        }
        // Nonce counts must grow (replay protection), remembered for a
        // bounded set of nonces; `qop=auth` was required, so there is one.
        if let Some(nc) = c.nc {
            let seen = self.edge.nonce_counts.get(&c.nonce).copied();
            if seen.is_some_and(|s| nc <= s) {
                return AuthResult::Stale;
            }
            if seen.is_none() && self.edge.nonce_counts.len() >= MAX_TRACKED_NONCES {
                // Forget nonces that are stale by now; if still full, start over.
                let nonces = &self.edge.nonces;
                let realm = reg.realm.as_str();
                self.edge
                    .nonce_counts
                    .retain(|n, _| nonces.check(n, secs, realm) == NonceCheck::Valid);
                if self.edge.nonce_counts.len() >= MAX_TRACKED_NONCES {
                    self.edge.nonce_counts.clear();
                }
            }
            self.edge.nonce_counts.insert(c.nonce.clone(), nc);
        }
        AuthResult::Ok(user)
    }

    /// Answers `msg` with a challenge: 401 + WWW-Authenticate (REGISTER) or
    /// 407 + Proxy-Authenticate (INVITE), one header per algorithm.
    pub(super) fn send_challenge(&mut self, now: Instant, flow: Flow, msg: &Message, stale: bool) {
        let Some(reg) = self.cfg.registrar() else {
            return;
        };
        let realm = reg.realm.clone();
        let algs: Vec<Algorithm> = reg.algorithms.iter().map(|a| algorithm(*a)).collect();
        let secs = self.edge.nonce_secs(now);
        let salt = self.ids.random_u64();
        let nonce = self.edge.nonces.issue(secs, salt, &realm);
        let register = msg.method() == Some(&palisade_sip::Method::Register);
        let (status, header) = if register {
            (401, HeaderName::WwwAuthenticate)
        } else {
            (407, HeaderName::ProxyAuthenticate)
        };
        self.edge.stats.challenges_sent += 1;
        self.respond_stateless(flow, msg, status, |w| {
            for alg in algs {
                let ch = Challenge {
                    realm: realm.clone(),
                    nonce: nonce.clone(),
                    opaque: None,
                    algorithm: alg,
                    qop_auth: true,
                    stale,
                };
                w.header(header, &ch.to_header());
            }
        });
    }

    /// Reports failed credentials (counted, guard told, event for logs).
    pub(super) fn auth_failed(&mut self, now: Instant, flow: Flow, user: &str) {
        self.edge.stats.auth_failures += 1;
        self.guard.auth_failed(now, &flow, user);
        self.edge.emit(EdgeEvent::AuthFailed {
            flow,
            user: user.chars().take(64).collect(),
        });
    }

    /// For INVITEs from a trunk with `challenge_inbound`: true when the
    /// request was answered (challenged) and must not go further.
    pub(super) fn challenge_invite(
        &mut self,
        now: Instant,
        flow: Flow,
        msg: &Message,
        trunk: palisade_config::TrunkId,
    ) -> bool {
        let cfg = Arc::clone(&self.cfg);
        let Some(t) = cfg.trunk(trunk).filter(|t| t.challenge_inbound) else {
            return false;
        };
        let users = UserRule::AnyOf(&t.challenge_inbound_users);
        match self.check_credentials(now, msg, HeaderName::ProxyAuthorization, users) {
            AuthResult::Ok(_) => false,
            AuthResult::Missing => {
                self.send_challenge(now, flow, msg, false);
                true
            }
            AuthResult::Stale => {
                self.send_challenge(now, flow, msg, true);
                true
            }
            AuthResult::Failed(user) => {
                self.auth_failed(now, flow, &user);
                self.send_challenge(now, flow, msg, false);
                true
            }
        }
    }

    /// A carrier answered attempt `idx` of call `c` with 401/407: when the
    /// trunk has credentials (for that realm) and this attempt did not carry
    /// any yet, the INVITE is re-sent to the same member with them (new
    /// branch, CSeq + 1) as a new attempt. Returns whether it did.
    pub(super) fn retry_invite_with_credentials(
        &mut self,
        now: Instant,
        c: CallRef,
        idx: usize,
        status: u16,
        resp: &Message,
    ) -> bool {
        let Some(call) = self.calls.get(&c) else {
            return false;
        };
        let Some(a) = call.attempts.get(idx) else {
            return false;
        };
        if a.done || a.abandoned || call.state != super::CallState::Early {
            return false;
        }
        let (member, txn) = (a.member, a.txn);
        let cfg = Arc::clone(&call.cfg);
        let Some(trunk) = cfg.trunk(call.out_trunk) else {
            return false;
        };
        let Some(auth) = trunk.auth.as_ref() else {
            return false;
        };
        let Some(req) = self.client.get(&txn).map(|t| t.request.clone()) else {
            return false;
        };
        // One authenticated try per attempt chain: a request that already
        // carried credentials and is refused again fails normally.
        let (challenge_hdr, creds_hdr) = if status == 407 {
            (
                HeaderName::ProxyAuthenticate,
                HeaderName::ProxyAuthorization,
            )
        } else {
            (HeaderName::WwwAuthenticate, HeaderName::Authorization)
        };
        if req.has_header(creds_hdr) {
            return false;
        }
        let challenge = best_challenge(resp, challenge_hdr, auth.realm.as_deref());
        let Some(challenge) = challenge else {
            return false;
        };
        let uri = req.request_uri_str().unwrap_or_default().to_owned();
        let cnonce = format!("{:016x}", self.ids.random_u64());
        let creds = client_credentials(
            &challenge,
            &auth.username,
            auth.password.expose(),
            "INVITE",
            &uri,
            &cnonce,
            1,
        );
        // The refused attempt is over; the INVITE is built again for the
        // same member (same Call-ID and From tag, next CSeq, new branch)
        // and `start_attempt` adds the credentials.
        if let Some(call) = self.calls.get_mut(&c)
            && let Some(a) = call.attempts.get_mut(idx)
        {
            a.done = true;
            a.responded = true;
        }
        self.timers
            .cancel(&TimerKey::Call(c, CallTimer::MemberTimeout(idx)));
        let Some(server) = self
            .calls
            .get(&c)
            .and_then(|call| call.invite.as_ref().map(|r| r.server))
        else {
            return false;
        };
        let Some(a_invite) = self.server.get(&server).map(|t| t.request.clone()) else {
            return false;
        };
        let Some(ruri) = a_invite.request_uri() else {
            return false;
        };
        let number = ruri.number().unwrap_or_default().to_owned();
        let user_phone = ruri
            .as_sip()
            .is_some_and(|s| s.params.get("user") == Some(Some("phone")));
        self.edge
            .pending_auth
            .insert(c, (creds_hdr, creds.to_header()));
        self.edge.stats.outbound_auth_retries += 1;
        // The ACK of the 401/407 goes out before the new INVITE.
        self.drive_client(now, txn);
        self.start_attempt(now, c, member, &number, user_phone);
        self.edge.pending_auth.remove(&c);
        true
    }
}

/// Whether the digest `uri` and the Request-URI name the same resource:
/// equal, or both SIP URIs with the same scheme, user and host (case-
/// insensitive) and port (the scheme's default when absent); parameters and
/// headers are ignored (RFC 2617 3.2.2.5 asks for the same URI, RFC 3261
/// 19.1.4 compares them this way in spirit). An answer computed for
/// another resource still fails; replays are stopped by nonce counts.
fn same_resource(digest_uri: &str, request_uri: &str) -> bool {
    if digest_uri == request_uri {
        return true;
    }
    let (Ok(a), Ok(b)) = (
        palisade_sip::Uri::parse(digest_uri),
        palisade_sip::Uri::parse(request_uri),
    ) else {
        return false;
    };
    let (Some(a), Some(b)) = (a.as_sip(), b.as_sip()) else {
        return false;
    };
    let port = |u: &palisade_sip::SipUri<'_>| {
        u.port.unwrap_or(match u.scheme {
            palisade_sip::SipScheme::Sips => 5061,
            palisade_sip::SipScheme::Sip => 5060,
        })
    };
    a.scheme == b.scheme
        && a.user == b.user
        && a.host_raw.eq_ignore_ascii_case(b.host_raw)
        && port(a) == port(b)
}

#[cfg(test)]
mod tests {
    use super::same_resource;

    #[test]
    fn digest_uris_naming_the_request_uris_resource_match() {
        let ruri = "sip:palisade.e2e;transport=UDP";
        assert!(same_resource("sip:palisade.e2e", ruri));
        assert!(same_resource("sip:PALISADE.e2e:5060;transport=udp", ruri));
        assert!(!same_resource("sip:other.example", ruri));
        assert!(!same_resource("sip:palisade.e2e:5080", ruri));
        assert!(!same_resource("sips:palisade.e2e", ruri));
        assert!(!same_resource("sip:100@palisade.e2e", ruri));
        assert!(!same_resource("not a uri", ruri));
    }
}
