//! Header names: the ones Palisade decodes or polices get a variant; the rest
//! are `Other` and keep their original spelling in the message buffer.

/// A header name, case-insensitive, compact forms folded into their long form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HeaderName {
    Accept,
    AcceptContact,
    AcceptEncoding,
    AcceptLanguage,
    AlertInfo,
    Allow,
    AllowEvents,
    AuthenticationInfo,
    Authorization,
    CallId,
    CallInfo,
    Contact,
    ContentDisposition,
    ContentEncoding,
    ContentLanguage,
    ContentLength,
    ContentType,
    CSeq,
    Date,
    Diversion,
    ErrorInfo,
    Event,
    Expires,
    From,
    HistoryInfo,
    Identity,
    InReplyTo,
    MaxForwards,
    MinExpires,
    MinSe,
    MimeVersion,
    Organization,
    PAssertedIdentity,
    PPreferredIdentity,
    Path,
    Priority,
    Privacy,
    ProxyAuthenticate,
    ProxyAuthorization,
    ProxyRequire,
    RAck,
    Reason,
    RecordRoute,
    ReferTo,
    ReferredBy,
    RejectContact,
    Replaces,
    ReplyTo,
    RequestDisposition,
    Require,
    RetryAfter,
    Route,
    RSeq,
    Server,
    SessionExpires,
    Subject,
    SubscriptionState,
    Supported,
    Timestamp,
    To,
    Unsupported,
    UserAgent,
    Via,
    Warning,
    WwwAuthenticate,
    /// Any other header; its spelling stays in the message.
    Other,
}

/// Every named variant, for lookup by spelling.
#[cfg(test)]
const ALL: &[HeaderName] = &[
    HeaderName::Accept,
    HeaderName::AcceptContact,
    HeaderName::AcceptEncoding,
    HeaderName::AcceptLanguage,
    HeaderName::AlertInfo,
    HeaderName::Allow,
    HeaderName::AllowEvents,
    HeaderName::AuthenticationInfo,
    HeaderName::Authorization,
    HeaderName::CallId,
    HeaderName::CallInfo,
    HeaderName::Contact,
    HeaderName::ContentDisposition,
    HeaderName::ContentEncoding,
    HeaderName::ContentLanguage,
    HeaderName::ContentLength,
    HeaderName::ContentType,
    HeaderName::CSeq,
    HeaderName::Date,
    HeaderName::Diversion,
    HeaderName::ErrorInfo,
    HeaderName::Event,
    HeaderName::Expires,
    HeaderName::From,
    HeaderName::HistoryInfo,
    HeaderName::Identity,
    HeaderName::InReplyTo,
    HeaderName::MaxForwards,
    HeaderName::MinExpires,
    HeaderName::MinSe,
    HeaderName::MimeVersion,
    HeaderName::Organization,
    HeaderName::PAssertedIdentity,
    HeaderName::PPreferredIdentity,
    HeaderName::Path,
    HeaderName::Priority,
    HeaderName::Privacy,
    HeaderName::ProxyAuthenticate,
    HeaderName::ProxyAuthorization,
    HeaderName::ProxyRequire,
    HeaderName::RAck,
    HeaderName::Reason,
    HeaderName::RecordRoute,
    HeaderName::ReferTo,
    HeaderName::ReferredBy,
    HeaderName::RejectContact,
    HeaderName::Replaces,
    HeaderName::ReplyTo,
    HeaderName::RequestDisposition,
    HeaderName::Require,
    HeaderName::RetryAfter,
    HeaderName::Route,
    HeaderName::RSeq,
    HeaderName::Server,
    HeaderName::SessionExpires,
    HeaderName::Subject,
    HeaderName::SubscriptionState,
    HeaderName::Supported,
    HeaderName::Timestamp,
    HeaderName::To,
    HeaderName::Unsupported,
    HeaderName::UserAgent,
    HeaderName::Via,
    HeaderName::Warning,
    HeaderName::WwwAuthenticate,
];

impl HeaderName {
    /// Canonical spelling used when Palisade writes this header.
    pub const fn as_str(self) -> &'static str {
        use HeaderName::*;
        match self {
            Accept => "Accept",
            AcceptContact => "Accept-Contact",
            AcceptEncoding => "Accept-Encoding",
            AcceptLanguage => "Accept-Language",
            AlertInfo => "Alert-Info",
            Allow => "Allow",
            AllowEvents => "Allow-Events",
            AuthenticationInfo => "Authentication-Info",
            Authorization => "Authorization",
            CallId => "Call-ID",
            CallInfo => "Call-Info",
            Contact => "Contact",
            ContentDisposition => "Content-Disposition",
            ContentEncoding => "Content-Encoding",
            ContentLanguage => "Content-Language",
            ContentLength => "Content-Length",
            ContentType => "Content-Type",
            CSeq => "CSeq",
            Date => "Date",
            Diversion => "Diversion",
            ErrorInfo => "Error-Info",
            Event => "Event",
            Expires => "Expires",
            From => "From",
            HistoryInfo => "History-Info",
            Identity => "Identity",
            InReplyTo => "In-Reply-To",
            MaxForwards => "Max-Forwards",
            MinExpires => "Min-Expires",
            MinSe => "Min-SE",
            MimeVersion => "MIME-Version",
            Organization => "Organization",
            PAssertedIdentity => "P-Asserted-Identity",
            PPreferredIdentity => "P-Preferred-Identity",
            Path => "Path",
            Priority => "Priority",
            Privacy => "Privacy",
            ProxyAuthenticate => "Proxy-Authenticate",
            ProxyAuthorization => "Proxy-Authorization",
            ProxyRequire => "Proxy-Require",
            RAck => "RAck",
            Reason => "Reason",
            RecordRoute => "Record-Route",
            ReferTo => "Refer-To",
            ReferredBy => "Referred-By",
            RejectContact => "Reject-Contact",
            Replaces => "Replaces",
            ReplyTo => "Reply-To",
            RequestDisposition => "Request-Disposition",
            Require => "Require",
            RetryAfter => "Retry-After",
            Route => "Route",
            RSeq => "RSeq",
            Server => "Server",
            SessionExpires => "Session-Expires",
            Subject => "Subject",
            SubscriptionState => "Subscription-State",
            Supported => "Supported",
            Timestamp => "Timestamp",
            To => "To",
            Unsupported => "Unsupported",
            UserAgent => "User-Agent",
            Via => "Via",
            Warning => "Warning",
            WwwAuthenticate => "WWW-Authenticate",
            Other => "",
        }
    }

    /// Classifies a raw header name (case-insensitive; compact forms of
    /// RFC 3261 section 7.3.3 and later RFCs included).
    pub fn from_bytes(name: &[u8]) -> HeaderName {
        use HeaderName::*;
        if name.len() == 1 {
            return match name[0].to_ascii_lowercase() {
                b'a' => AcceptContact,
                b'b' => ReferredBy,
                b'c' => ContentType,
                b'd' => RequestDisposition,
                b'e' => ContentEncoding,
                b'f' => From,
                b'i' => CallId,
                b'j' => RejectContact,
                b'k' => Supported,
                b'l' => ContentLength,
                b'm' => Contact,
                b'o' => Event,
                b'r' => ReferTo,
                b's' => Subject,
                b't' => To,
                b'u' => AllowEvents,
                b'v' => Via,
                b'x' => SessionExpires,
                b'y' => Identity,
                _ => Other,
            };
        }
        let Some(&first) = name.first() else {
            return Other;
        };
        // Dispatch on (length, first letter): at most three comparisons.
        let candidates: &[HeaderName] = match (name.len(), first.to_ascii_lowercase()) {
            (2, b't') => &[To],
            (3, b'v') => &[Via],
            (4, b'c') => &[CSeq],
            (4, b'd') => &[Date],
            (4, b'f') => &[From],
            (4, b'p') => &[Path],
            (4, b'r') => &[RAck, RSeq],
            (5, b'a') => &[Allow],
            (5, b'e') => &[Event],
            (5, b'r') => &[Route],
            (6, b'a') => &[Accept],
            (6, b'm') => &[MinSe],
            (6, b'r') => &[Reason],
            (6, b's') => &[Server],
            (7, b'c') => &[CallId, Contact],
            (7, b'e') => &[Expires],
            (7, b'p') => &[Privacy],
            (7, b'r') => &[Require],
            (7, b's') => &[Subject],
            (7, b'w') => &[Warning],
            (8, b'i') => &[Identity],
            (8, b'p') => &[Priority],
            (8, b'r') => &[ReferTo, Replaces, ReplyTo],
            (9, b'c') => &[CallInfo],
            (9, b'd') => &[Diversion],
            (9, b's') => &[Supported],
            (9, b't') => &[Timestamp],
            (10, b'a') => &[AlertInfo],
            (10, b'e') => &[ErrorInfo],
            (10, b'u') => &[UserAgent],
            (11, b'i') => &[InReplyTo],
            (11, b'm') => &[MinExpires],
            (11, b'r') => &[ReferredBy, RetryAfter],
            (11, b'u') => &[Unsupported],
            (12, b'a') => &[AllowEvents],
            (12, b'c') => &[ContentType],
            (12, b'h') => &[HistoryInfo],
            (12, b'm') => &[MaxForwards, MimeVersion],
            (12, b'o') => &[Organization],
            (12, b'r') => &[RecordRoute],
            (13, b'a') => &[Authorization],
            (13, b'p') => &[ProxyRequire],
            (14, b'a') => &[AcceptContact],
            (14, b'c') => &[ContentLength],
            (14, b'r') => &[RejectContact],
            (15, b'a') => &[AcceptEncoding, AcceptLanguage],
            (15, b's') => &[SessionExpires],
            (16, b'c') => &[ContentEncoding, ContentLanguage],
            (16, b'w') => &[WwwAuthenticate],
            (18, b'p') => &[ProxyAuthenticate],
            (18, b's') => &[SubscriptionState],
            (19, b'a') => &[AuthenticationInfo],
            (19, b'c') => &[ContentDisposition],
            (19, b'p') => &[PAssertedIdentity, ProxyAuthorization],
            (19, b'r') => &[RequestDisposition],
            (20, b'p') => &[PPreferredIdentity],
            _ => &[],
        };
        candidates
            .iter()
            .copied()
            .find(|c| c.as_str().as_bytes().eq_ignore_ascii_case(name))
            .unwrap_or(Other)
    }

    /// The compact form (RFC 3261 section 7.3.3 and extensions), if any.
    pub const fn compact(self) -> Option<char> {
        use HeaderName::*;
        Some(match self {
            AcceptContact => 'a',
            ReferredBy => 'b',
            ContentType => 'c',
            RequestDisposition => 'd',
            ContentEncoding => 'e',
            From => 'f',
            CallId => 'i',
            RejectContact => 'j',
            Supported => 'k',
            ContentLength => 'l',
            Contact => 'm',
            Event => 'o',
            ReferTo => 'r',
            Subject => 's',
            To => 't',
            AllowEvents => 'u',
            Via => 'v',
            SessionExpires => 'x',
            Identity => 'y',
            _ => return None,
        })
    }

    /// Headers whose value is a comma-separated list that may be split across
    /// several header lines (RFC 3261 section 7.3.1). Headers such as
    /// WWW-Authenticate or Date contain commas that are not separators.
    pub const fn is_list(self) -> bool {
        use HeaderName::*;
        matches!(
            self,
            Accept
                | AcceptEncoding
                | AcceptLanguage
                | AlertInfo
                | Allow
                | AllowEvents
                | CallInfo
                | Contact
                | ContentEncoding
                | ContentLanguage
                | Diversion
                | ErrorInfo
                | HistoryInfo
                | InReplyTo
                | PAssertedIdentity
                | PPreferredIdentity
                | Path
                | Privacy
                | ProxyRequire
                | Reason
                | RecordRoute
                | Require
                | Route
                | Supported
                | Unsupported
                | Via
                | Warning
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips_in_any_case() {
        for &n in ALL {
            assert_eq!(HeaderName::from_bytes(n.as_str().as_bytes()), n);
            let upper = n.as_str().to_ascii_uppercase();
            assert_eq!(HeaderName::from_bytes(upper.as_bytes()), n);
            if let Some(c) = n.compact() {
                assert_eq!(HeaderName::from_bytes(c.to_string().as_bytes()), n);
                assert_eq!(
                    HeaderName::from_bytes(c.to_ascii_uppercase().to_string().as_bytes()),
                    n
                );
            }
        }
        assert_eq!(HeaderName::from_bytes(b"X-Custom"), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(b"q"), HeaderName::Other);
    }
}
