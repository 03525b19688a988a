//! Transaction matching keys: RFC 3261 17.1.3 (client) and 17.2.3 (server).
//!
//! The engine extracts the fields with the codec and builds a key; the keys
//! are plain data for `HashMap`s.
//!
//! # Requests from RFC 2543 peers
//!
//! A request whose top Via branch does not start with the magic cookie
//! [`MAGIC_COOKIE`] (see [`is_rfc3261_branch`]) comes from an RFC 2543
//! element; matching it would need the old rules of RFC 3261 17.2.3 (Request-URI,
//! To tag, From tag, Call-ID, CSeq and top Via compared together). Palisade
//! does not implement those: the engine answers such requests statelessly
//! with 400 and creates no transaction; an ACK without the cookie is
//! dropped. Responses are matched only against our own branches, which
//! always carry the cookie.

use std::fmt::Write as _;

/// The branch prefix that marks an RFC 3261 transaction identifier.
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// Whether `branch` is an RFC 3261 branch: the magic cookie `z9hG4bK`
/// (case-sensitive) followed by at least one character. A bare cookie is
/// refused: it cannot identify a transaction.
pub fn is_rfc3261_branch(branch: &str) -> bool {
    branch.len() > MAGIC_COOKIE.len() && branch.starts_with(MAGIC_COOKIE)
}

/// Which transaction a method belongs to, for matching.
///
/// RFC 3261 compares the exact method; since an RFC 3261 element makes every
/// branch unique except for CANCEL and the ACK of a non-2xx (8.1.1.7), the
/// class is enough to tell transactions with the same branch apart. An
/// engine that wants the strict comparison checks the CSeq method against
/// the request it holds after a match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MethodClass {
    /// INVITE (and, for server matching, the ACK of a non-2xx final).
    Invite,
    /// CANCEL: same branch as the INVITE it cancels, its own transaction.
    Cancel,
    /// Every other method.
    NonInvite,
}

impl MethodClass {
    /// The class of a request's method for server matching (17.2.3): `ACK`
    /// maps to [`MethodClass::Invite`], since the ACK of a 300-699 belongs
    /// to the INVITE transaction. Methods are case-sensitive (RFC 3261 7.1).
    pub fn of_request(method: impl AsRef<[u8]>) -> Self {
        match method.as_ref() {
            b"INVITE" | b"ACK" => MethodClass::Invite,
            b"CANCEL" => MethodClass::Cancel,
            _ => MethodClass::NonInvite,
        }
    }

    /// The class of a response's CSeq method for client matching (17.1.3).
    /// A response claiming to answer an ACK maps to
    /// [`MethodClass::NonInvite`], so it never matches an INVITE transaction.
    pub fn of_response(cseq_method: impl AsRef<[u8]>) -> Self {
        match cseq_method.as_ref() {
            b"INVITE" => MethodClass::Invite,
            b"CANCEL" => MethodClass::Cancel,
            _ => MethodClass::NonInvite,
        }
    }
}

/// Client transaction key (RFC 3261 17.1.3): the branch of the top Via of
/// the request we sent, and the CSeq method class. A response matches if
/// its top Via branch and CSeq method give an equal key.
///
/// Branches are compared byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientKey {
    branch: Box<str>,
    method: MethodClass,
}

impl ClientKey {
    /// Builds the key from a branch and a method class.
    pub fn new(branch: &str, method: MethodClass) -> Self {
        ClientKey {
            branch: branch.into(),
            method,
        }
    }

    /// The branch.
    pub fn branch(&self) -> &str {
        &self.branch
    }

    /// The method class.
    pub fn method(&self) -> MethodClass {
        self.method
    }
}

/// Server transaction key (RFC 3261 17.2.3): top Via branch, top Via
/// sent-by, and method class (ACK counts as INVITE; CANCEL has its own).
///
/// The sent-by is stored as `host` or `host:port` with the host lower-cased
/// (host names are case-insensitive; IPv6 references keep their brackets).
/// A missing port is kept missing: `example.com` and `example.com:5060` are
/// different sent-by values, as retransmissions repeat the Via unchanged.
///
/// To find the INVITE a CANCEL refers to (RFC 3261 9.2), look up
/// `cancel_key.with_method(MethodClass::Invite)`. An ACK that matches no
/// server transaction is the ACK of a 2xx (a transaction of its own, RFC
/// 3261 17.1.1.3) and goes to the dialog layer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerKey {
    branch: Box<str>,
    sent_by: Box<str>,
    method: MethodClass,
}

impl ServerKey {
    /// Builds the key from the top Via's branch, sent-by host and port, and
    /// the request's method class.
    pub fn new(branch: &str, host: &str, port: Option<u16>, method: MethodClass) -> Self {
        let mut sent_by = String::with_capacity(host.len() + 6);
        sent_by.push_str(host);
        sent_by.make_ascii_lowercase();
        if let Some(port) = port {
            // Writing to a String cannot fail.
            let _ = write!(sent_by, ":{port}");
        }
        ServerKey {
            branch: branch.into(),
            sent_by: sent_by.into_boxed_str(),
            method,
        }
    }

    /// The same branch and sent-by with another method class.
    pub fn with_method(&self, method: MethodClass) -> Self {
        ServerKey {
            branch: self.branch.clone(),
            sent_by: self.sent_by.clone(),
            method,
        }
    }

    /// The branch.
    pub fn branch(&self) -> &str {
        &self.branch
    }

    /// The normalised sent-by (`host` or `host:port`).
    pub fn sent_by(&self) -> &str {
        &self.sent_by
    }

    /// The method class.
    pub fn method(&self) -> MethodClass {
        self.method
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn magic_cookie() {
        assert!(is_rfc3261_branch("z9hG4bK776asdhds"));
        assert!(!is_rfc3261_branch("z9hG4bK"), "bare cookie");
        assert!(!is_rfc3261_branch("Z9HG4BK776asdhds"), "case-sensitive");
        assert!(!is_rfc3261_branch("776asdhds"));
        assert!(!is_rfc3261_branch(""));
    }

    #[test]
    fn method_classes() {
        assert_eq!(MethodClass::of_request("INVITE"), MethodClass::Invite);
        assert_eq!(MethodClass::of_request("ACK"), MethodClass::Invite);
        assert_eq!(MethodClass::of_request(b"CANCEL"), MethodClass::Cancel);
        assert_eq!(MethodClass::of_request("BYE"), MethodClass::NonInvite);
        assert_eq!(MethodClass::of_request("invite"), MethodClass::NonInvite);
        assert_eq!(MethodClass::of_response("INVITE"), MethodClass::Invite);
        assert_eq!(MethodClass::of_response("ACK"), MethodClass::NonInvite);
        assert_eq!(MethodClass::of_response("CANCEL"), MethodClass::Cancel);
        assert_eq!(MethodClass::of_response("OPTIONS"), MethodClass::NonInvite);
    }

    #[test]
    fn server_keys_match_ack_to_invite_and_separate_cancel() {
        let b = "z9hG4bKabc";
        let invite = ServerKey::new(
            b,
            "PBX.Example.COM",
            Some(5070),
            MethodClass::of_request("INVITE"),
        );
        let ack = ServerKey::new(
            b,
            "pbx.example.com",
            Some(5070),
            MethodClass::of_request("ACK"),
        );
        let cancel = ServerKey::new(
            b,
            "pbx.example.com",
            Some(5070),
            MethodClass::of_request("CANCEL"),
        );
        assert_eq!(invite.sent_by(), "pbx.example.com:5070");
        assert_eq!(invite, ack);
        assert_ne!(invite, cancel);
        assert_eq!(cancel.with_method(MethodClass::Invite), invite);

        let mut map = HashMap::new();
        map.insert(invite.clone(), "invite");
        map.insert(cancel.clone(), "cancel");
        assert_eq!(map.get(&ack), Some(&"invite"));
        assert_eq!(map.get(&cancel), Some(&"cancel"));

        // Other sent-by or branch: other transaction.
        assert_ne!(
            invite,
            ServerKey::new(b, "127.0.0.11", Some(5070), MethodClass::Invite)
        );
        assert_ne!(
            invite,
            ServerKey::new(b, "pbx.example.com", None, MethodClass::Invite)
        );
        assert_ne!(
            invite,
            ServerKey::new(
                "z9hG4bKabd",
                "pbx.example.com",
                Some(5070),
                MethodClass::Invite
            )
        );
        let v6 = ServerKey::new(b, "[::1]", Some(5060), MethodClass::NonInvite);
        assert_eq!(v6.sent_by(), "[::1]:5060");
        assert_eq!(v6.branch(), b);
        assert_eq!(v6.method(), MethodClass::NonInvite);
    }

    #[test]
    fn client_keys() {
        let invite = ClientKey::new("z9hG4bK1", MethodClass::of_response("INVITE"));
        let cancel = ClientKey::new("z9hG4bK1", MethodClass::of_response("CANCEL"));
        assert_ne!(invite, cancel);
        assert_eq!(invite, ClientKey::new("z9hG4bK1", MethodClass::Invite));
        assert_ne!(invite, ClientKey::new("z9hG4bk1", MethodClass::Invite));
        assert_eq!(invite.branch(), "z9hG4bK1");
        assert_eq!(cancel.method(), MethodClass::Cancel);
    }
}
