//! SIP request methods. Method names are case-sensitive (RFC 3261 section 7.1).

use std::fmt;

/// A SIP method. Unknown (extension) methods keep their name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Info,
    Update,
    Prack,
    Subscribe,
    Notify,
    Refer,
    Message,
    Publish,
    /// Any other `token` method name.
    Extension(Box<str>),
}

impl Method {
    /// Parses a method token; `None` if it is empty or not a `token`.
    pub fn from_bytes(b: &[u8]) -> Option<Method> {
        use Method::*;
        Some(match b {
            b"INVITE" => Invite,
            b"ACK" => Ack,
            b"BYE" => Bye,
            b"CANCEL" => Cancel,
            b"OPTIONS" => Options,
            b"REGISTER" => Register,
            b"INFO" => Info,
            b"UPDATE" => Update,
            b"PRACK" => Prack,
            b"SUBSCRIBE" => Subscribe,
            b"NOTIFY" => Notify,
            b"REFER" => Refer,
            b"MESSAGE" => Message,
            b"PUBLISH" => Publish,
            _ => {
                if b.is_empty() || b.len() > 64 || !b.iter().all(|&c| crate::scan::is_token_char(c))
                {
                    return None;
                }
                // Token characters are ASCII, so this cannot fail.
                Extension(std::str::from_utf8(b).ok()?.into())
            }
        })
    }

    /// The method name as written on the wire.
    pub fn as_str(&self) -> &str {
        use Method::*;
        match self {
            Invite => "INVITE",
            Ack => "ACK",
            Bye => "BYE",
            Cancel => "CANCEL",
            Options => "OPTIONS",
            Register => "REGISTER",
            Info => "INFO",
            Update => "UPDATE",
            Prack => "PRACK",
            Subscribe => "SUBSCRIBE",
            Notify => "NOTIFY",
            Refer => "REFER",
            Message => "MESSAGE",
            Publish => "PUBLISH",
            Extension(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_unknown_and_invalid() {
        assert_eq!(Method::from_bytes(b"INVITE"), Some(Method::Invite));
        assert_eq!(
            Method::from_bytes(b"invite"),
            Some(Method::Extension("invite".into()))
        );
        assert_eq!(
            Method::from_bytes(b"NEWMETHOD").map(|m| m.to_string()),
            Some("NEWMETHOD".into())
        );
        assert_eq!(Method::from_bytes(b""), None);
        assert_eq!(Method::from_bytes(b"IN VITE"), None);
        assert_eq!(Method::from_bytes(b"INV\xffTE"), None);
    }
}
