//! Authentication on the TLS transport (docs/PROTOCOL.md §2.1): the constants both sides
//! share and the exact bytes a client signs with its SSH key.
//!
//! The signature covers a nonce the server chose, the TLS channel binding (RFC 9266
//! `tls-exporter`) and the server certificate's hash, so it is worthless on any other TLS
//! connection: a man in the middle who relays it to the real server presents a different
//! exporter value there and is refused.

/// Default TCP port of the TLS transport.
pub const DEFAULT_TLS_PORT: u16 = 5990;
/// SshSig namespace of authentication signatures (as `ssh-keygen -Y sign -n`).
pub const SIGNATURE_NAMESPACE: &str = "linger-auth@v1";
/// RFC 9266 exporter label; no context; 32 bytes.
pub const CHANNEL_BINDING_LABEL: &[u8] = b"EXPORTER-Channel-Binding";
/// Length of the server's challenge nonce, of the channel binding and of the certificate hash.
pub const BINDING_LEN: usize = 32;
/// Signature attempts allowed on one connection (as sshd's MaxAuthTries).
pub const MAX_AUTH_TRIES: u32 = 6;
/// Largest frame a server reads before `Welcome` (`Hello`, `Authenticate`): an
/// unauthenticated peer cannot make it reserve more. An RSA-4096 key with its signature
/// takes under 3 KiB.
pub const MAX_LOGIN_FRAME_LEN: usize = 16 * 1024;
/// Longest `Authenticate.user`; a longer one is refused without being looked up.
pub const MAX_USER_LEN: usize = 64;
/// Prefix of the signed message; its trailing NUL ends the tag.
const TAG: &[u8] = b"linger-auth-v1\0";

/// The message an `Authenticate` signature covers: the tag, the 32-byte nonce, the 32-byte
/// channel binding, the SHA-256 of the server's certificate (DER), then the user name as
/// UTF-8. Every field but the last has a fixed length, so the layout is unambiguous.
pub fn signed_message(
    nonce: &[u8; BINDING_LEN],
    channel_binding: &[u8; BINDING_LEN],
    certificate_sha256: &[u8; BINDING_LEN],
    user: &str,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(TAG.len() + 3 * BINDING_LEN + user.len());
    m.extend_from_slice(TAG);
    m.extend_from_slice(nonce);
    m.extend_from_slice(channel_binding);
    m.extend_from_slice(certificate_sha256);
    m.extend_from_slice(user.as_bytes());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_fixed_fields_then_user() {
        let m = signed_message(&[1; 32], &[2; 32], &[3; 32], "ops");
        assert_eq!(&m[..15], b"linger-auth-v1\0");
        assert_eq!(&m[15..47], &[1; 32]);
        assert_eq!(&m[47..79], &[2; 32]);
        assert_eq!(&m[79..111], &[3; 32]);
        assert_eq!(&m[111..], b"ops");
    }
}
