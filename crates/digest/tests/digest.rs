//! RFC examples, round trips, nonces and property tests.

use palisade_digest::*;
use proptest::prelude::*;

/// RFC 7616 section 3.9.1 (errata 4495: "Circle of Life").
const RFC7616_NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
const RFC7616_CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
const RFC7616_REALM: &str = "http-auth@example.org";

fn rfc7616(alg: Algorithm) -> String {
    let h1 = ha1(alg, "Mufasa", RFC7616_REALM, "Circle of Life");
    request_digest(
        alg,
        &h1,
        RFC7616_NONCE,
        1,
        RFC7616_CNONCE,
        Some(Qop::Auth),
        "GET",
        "/dir/index.html",
    )
}

#[test]
fn rfc7616_md5_example() {
    assert_eq!(rfc7616(Algorithm::Md5), "8ca523f5e9506fed4657c9700eebdbec");
}

#[test]
fn rfc7616_sha256_example() {
    assert_eq!(
        rfc7616(Algorithm::Sha256),
        "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    );
}

#[test]
fn rfc2617_example_through_the_client_helper() {
    let ch = Challenge::parse(
        r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
    )
    .unwrap();
    assert!(ch.qop_auth);
    assert_eq!(ch.algorithm, Algorithm::Md5);
    let c = client_credentials(
        &ch,
        "Mufasa",
        "Circle Of Life",
        "GET",
        "/dir/index.html",
        "0a4f113b",
        1,
    );
    assert_eq!(c.response, "6629fae49393a05397450978507c4ef1");
    let header = c.to_header();
    assert!(
        header.contains("nc=00000001") && header.contains("qop=auth"),
        "{header}"
    );
    let back = Credentials::parse(&header).unwrap();
    assert_eq!(back, c);
    let stored = ha1(
        Algorithm::Md5,
        "Mufasa",
        "testrealm@host.com",
        "Circle Of Life",
    );
    assert!(verify(&back, &stored, "GET"));
    assert!(!verify(&back, &stored, "POST"), "the method is covered");
    let wrong = ha1(
        Algorithm::Md5,
        "Mufasa",
        "testrealm@host.com",
        "circle of life",
    );
    assert!(!verify(&back, &wrong, "GET"));
}

#[test]
fn rfc2069_form_without_qop() {
    let ch = Challenge::parse(
        r#"Digest realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
    )
    .unwrap();
    let c = client_credentials(
        &ch,
        "Mufasa",
        "CircleOfLife",
        "GET",
        "/dir/index.html",
        "x",
        1,
    );
    assert_eq!(c.response, "1949323746fe6a43ef61f9606e7febea");
    assert_eq!(c.qop, None);
    assert_eq!(c.nc, None);
}

#[test]
fn server_verification_holds_the_client_to_the_challenge_and_the_request() {
    let h1 = ha1(Algorithm::Sha256, "alice", "r", "pw");
    let offered = Challenge {
        realm: "r".into(),
        nonce: "n".into(),
        opaque: None,
        algorithm: Algorithm::Sha256,
        qop_auth: true,
        stale: false,
    };
    let uri = "sip:r";
    let expect = ServerExpect {
        method: "REGISTER",
        request_uri: uri,
        qop_offered: true,
    };
    let good = client_credentials(&offered, "alice", "pw", "REGISTER", uri, "c", 1);
    assert_eq!(verify_request(&good, &h1, &expect), Ok(()));
    // The RFC 2069 form (no qop, no nonce count): a valid digest, but a
    // downgrade the server did not offer.
    let legacy = client_credentials(
        &Challenge {
            qop_auth: false,
            ..offered.clone()
        },
        "alice",
        "pw",
        "REGISTER",
        uri,
        "c",
        1,
    );
    assert!(
        verify(&legacy, &h1, "REGISTER"),
        "the digest itself is right"
    );
    assert_eq!(
        verify_request(&legacy, &h1, &expect),
        Err(Refusal::QopMissing)
    );
    // Accepted only when the challenge had no qop.
    let no_qop = ServerExpect {
        qop_offered: false,
        ..expect
    };
    assert_eq!(verify_request(&legacy, &h1, &no_qop), Ok(()));
    // An answer computed for another Request-URI.
    let other = client_credentials(&offered, "alice", "pw", "REGISTER", "sip:elsewhere", "c", 1);
    assert!(verify(&other, &h1, "REGISTER"));
    assert_eq!(
        verify_request(&other, &h1, &expect),
        Err(Refusal::UriMismatch)
    );
    // Wrong password, wrong method.
    let bad = client_credentials(&offered, "alice", "nope", "REGISTER", uri, "c", 1);
    assert_eq!(verify_request(&bad, &h1, &expect), Err(Refusal::Digest));
    let invite = ServerExpect {
        method: "INVITE",
        ..expect
    };
    assert_eq!(verify_request(&good, &h1, &invite), Err(Refusal::Digest));
}

#[test]
fn sha256_challenge_and_stale_flag() {
    let ch = Challenge::parse(
        "Digest realm=\"sip.example\", nonce=abc, algorithm=SHA-256, qop=\"auth\", stale=TRUE",
    )
    .unwrap();
    assert_eq!(ch.algorithm, Algorithm::Sha256);
    assert!(ch.stale);
    let c = client_credentials(&ch, "alice", "pw", "REGISTER", "sip:sip.example", "cn", 2);
    assert_eq!(c.response.len(), 64);
    let h1 = ha1(Algorithm::Sha256, "alice", "sip.example", "pw");
    assert!(verify(
        &Credentials::parse(&c.to_header()).unwrap(),
        &h1,
        "REGISTER"
    ));
    assert_eq!(Challenge::parse(&ch.to_header()).unwrap(), ch);
}

#[test]
fn parser_refuses_what_it_must() {
    assert_eq!(
        Challenge::parse("Basic realm=\"x\""),
        Err(DigestError::NotDigest)
    );
    assert_eq!(
        Challenge::parse("Digest nonce=\"n\""),
        Err(DigestError::Missing("realm"))
    );
    assert!(matches!(
        Challenge::parse("Digest realm=\"a\", realm=\"b\", nonce=n"),
        Err(DigestError::Duplicate(_))
    ));
    assert!(matches!(
        Challenge::parse("Digest realm=\"a\", nonce=n, algorithm=MD5-sess"),
        Err(DigestError::Algorithm(_))
    ));
    assert!(matches!(
        Challenge::parse("Digest realm=\"a\", nonce=n, qop=\"auth-int\""),
        Err(DigestError::Qop(_))
    ));
    assert!(matches!(
        Challenge::parse("Digest realm=\"unterminated"),
        Err(DigestError::Syntax(_))
    ));
    assert!(matches!(
        Challenge::parse("Digest realm=\"a\" nonce=n"),
        Err(DigestError::Syntax(_))
    ));
    let long = format!("Digest realm=\"{}\", nonce=n", "a".repeat(MAX_HEADER_BYTES));
    assert_eq!(Challenge::parse(&long), Err(DigestError::TooLarge));
    let many: Vec<String> = (0..40).map(|i| format!("p{i}=v")).collect();
    assert_eq!(
        Challenge::parse(&format!("Digest realm=r, nonce=n, {}", many.join(", "))),
        Err(DigestError::TooLarge)
    );
    // qop without nc/cnonce, and a malformed nc.
    let base = "Digest username=u, realm=r, nonce=n, uri=\"sip:x\", response=ab";
    assert_eq!(
        Credentials::parse(&format!("{base}, qop=auth")),
        Err(DigestError::NonceCount)
    );
    assert_eq!(
        Credentials::parse(&format!("{base}, qop=auth, cnonce=c, nc=1")),
        Err(DigestError::NonceCount)
    );
    // Escapes inside quoted strings.
    let c = Credentials::parse(
        r#"Digest username="a\"b\\c", realm=r, nonce=n, uri="sip:x", response=AB"#,
    )
    .unwrap();
    assert_eq!(c.username, "a\"b\\c");
    assert_eq!(c.response, "ab");
    assert_eq!(Credentials::parse(&c.to_header()).unwrap(), c);
    // An escaped NUL is refused like a raw one (found by the fuzzer: the
    // value could not be written back as a valid header).
    assert!(matches!(
        Challenge::parse("Digest realm=\"a\\\u{0}b\", nonce=n"),
        Err(DigestError::Syntax(_))
    ));
}

#[test]
fn nonces_expire_and_cannot_be_forged() {
    let n = NonceIssuer::new([9; 32], 300);
    let nonce = n.issue(1000, 42, "r");
    assert_eq!(nonce.len(), 64);
    assert_ne!(
        n.issue(1000, 43, "r"),
        nonce,
        "the salt makes nonces unique"
    );
    assert_eq!(n.check(&nonce, 1000, "r"), NonceCheck::Valid);
    assert_eq!(n.check(&nonce, 1300, "r"), NonceCheck::Valid);
    assert_eq!(n.check(&nonce, 1301, "r"), NonceCheck::Stale);
    assert_eq!(
        n.check(&nonce, 999, "r"),
        NonceCheck::Invalid,
        "issued in the future"
    );
    assert_eq!(n.check(&nonce, 1000, "other"), NonceCheck::Invalid);
    let other_key = NonceIssuer::new([8; 32], 300);
    assert_eq!(other_key.check(&nonce, 1000, "r"), NonceCheck::Invalid);
    // Changing the time part invalidates the tag.
    let forged = format!("{:016x}{}", 5000u64, &nonce[16..]);
    assert_eq!(n.check(&forged, 5000, "r"), NonceCheck::Invalid);
    let resalted = format!("{}{:016x}{}", &nonce[..16], 7u64, &nonce[32..]);
    assert_eq!(n.check(&resalted, 1000, "r"), NonceCheck::Invalid);
    assert_eq!(n.check(&forged, 5000, "r"), NonceCheck::Invalid);
    assert_eq!(n.check("short", 1000, "r"), NonceCheck::Invalid);
    assert_eq!(n.check(&"é".repeat(32), 1000, "r"), NonceCheck::Invalid);
    assert!(!format!("{n:?}").contains("9, 9"), "the key is not printed");
}

proptest! {
    #[test]
    fn parser_never_panics_and_round_trips(s in "\\PC{0,300}") {
        palisade_digest::fuzz::fuzz_parse(s.as_bytes());
    }

    #[test]
    fn structured_headers_round_trip(
        user in "[ -~]{1,40}", realm in "[ -~]{0,40}", nonce in "[A-Za-z0-9+/=]{1,60}",
        uri in "sip:[a-z0-9@.:;=]{1,40}", sha in any::<bool>(), qop in any::<bool>(), nc in 1u32..,
    ) {
        let ch = Challenge {
            realm: realm.clone(), nonce, opaque: Some("o\"x".into()),
            algorithm: if sha { Algorithm::Sha256 } else { Algorithm::Md5 },
            qop_auth: qop, stale: false,
        };
        let parsed = Challenge::parse(&ch.to_header()).unwrap();
        prop_assert_eq!(&parsed, &ch);
        let c = client_credentials(&ch, &user, "secret", "INVITE", &uri, "cn0nce", nc);
        let back = Credentials::parse(&c.to_header()).unwrap();
        prop_assert_eq!(&back, &c);
        let h1 = ha1(ch.algorithm, &user, &realm, "secret");
        prop_assert!(verify(&back, &h1, "INVITE"));
    }
}
