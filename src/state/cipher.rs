//! State at rest: AES-256-GCM with a key kept in the data directory (0600) or given by flag.
//! The twin id is bound in as associated data, so a version cannot be moved to another twin.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use rand::RngCore;

const NONCE_LEN: usize = 12;
/// Sealed with the key at first start; opening it at every start proves the key is the same.
pub const KEY_CHECK_PLAINTEXT: &[u8] = b"terrastream state key check v1";
pub const KEY_CHECK_CONTEXT: &str = "key-check";

#[derive(Debug, thiserror::Error)]
pub enum CipherError {
    #[error("the state key must be 32 bytes as base64 or 64 hex digits")]
    BadKey,
    #[error("cannot read or create the state key at {path}: {source}")]
    KeyFile {
        path: String,
        source: std::io::Error,
    },
    #[error("stored state cannot be decrypted: wrong state key, or the data is damaged")]
    Decrypt,
    #[error("encrypting state failed")]
    Encrypt,
}

#[derive(Clone)]
pub struct StateCipher {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for StateCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateCipher(..)")
    }
}

fn parse_key(text: &str) -> Result<[u8; 32], CipherError> {
    let text = text.trim();
    let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(text).map_err(|_| CipherError::BadKey)?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| CipherError::BadKey)?
    };
    bytes.try_into().map_err(|_| CipherError::BadKey)
}

impl StateCipher {
    pub fn from_key_text(text: &str) -> Result<Self, CipherError> {
        let key = parse_key(text)?;
        Ok(Self {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key)),
        })
    }

    /// The key from `path`, created (random, mode 0600) if the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, CipherError> {
        let io = |source| CipherError::KeyFile {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_key_text(&text),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                rand::rng().fill_bytes(&mut key);
                let text = hex::encode(key);
                crate::auth::write_private_file(path, text.as_bytes()).map_err(io)?;
                Self::from_key_text(&text)
            }
            Err(err) => Err(io(err)),
        }
    }

    pub fn seal(&self, context: &str, plain: &[u8]) -> Result<Vec<u8>, CipherError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| CipherError::Encrypt)?;
        Ok([nonce.as_slice(), &sealed].concat())
    }

    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, CipherError> {
        if sealed.len() < NONCE_LEN {
            return Err(CipherError::Decrypt);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| CipherError::Decrypt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_state_opens_only_with_the_same_key_and_context() {
        let key = hex::encode([7u8; 32]);
        let cipher = StateCipher::from_key_text(&key).unwrap_or_else(|e| panic!("{e}"));
        let sealed = cipher.seal("twin_a", b"{\"serial\":1}").unwrap_or_default();
        assert!(!sealed.windows(6).any(|w| w == b"serial"));
        assert_eq!(
            cipher.open("twin_a", &sealed).ok().as_deref(),
            Some(&b"{\"serial\":1}"[..])
        );
        assert!(cipher.open("twin_b", &sealed).is_err());
        let other =
            StateCipher::from_key_text(&hex::encode([8u8; 32])).unwrap_or_else(|e| panic!("{e}"));
        assert!(other.open("twin_a", &sealed).is_err());
    }

    #[test]
    fn keys_are_hex_or_base64_of_32_bytes() {
        assert!(StateCipher::from_key_text(&hex::encode([1u8; 32])).is_ok());
        let b64 = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
        assert!(StateCipher::from_key_text(&b64).is_ok());
        assert!(StateCipher::from_key_text("short").is_err());
    }
}
