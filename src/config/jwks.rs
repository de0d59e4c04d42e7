//! Reading a JSON Web Key Set (RFC 7517) into verification keys: used for `jwks_file` when the
//! configuration is checked, and for keys fetched from a `jwks_url` while the gateway runs.

use super::JwtKey;
use jsonwebtoken::jwk::{JwkSet, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use std::str::FromStr;

/// The keys of a JWKS document that can verify one of `algorithms` (each key with the ones
/// that fit its type, or just its own `alg` when it names one), and a note for each key left
/// out. Fails when the document is not a JWKS.
pub fn read_jwks(
    document: &[u8],
    algorithms: &[Algorithm],
) -> Result<(Vec<JwtKey>, Vec<String>), String> {
    let set: JwkSet =
        serde_json::from_slice(document).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys = Vec::new();
    let mut left_out = Vec::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        let kid = jwk.common.key_id.clone();
        let named = match &kid {
            Some(k) => format!("key {i} (kid \"{k}\")"),
            None => format!("key {i}"),
        };
        // Keys published for encryption, or for operations other than verifying, and keys
        // pinned to an algorithm that does not sign, verify nothing.
        if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
            left_out.push(format!("{named} is for encryption (use: enc)"));
            continue;
        }
        if let Some(ops) = &jwk.common.key_operations {
            if !ops.contains(&KeyOperations::Verify) {
                left_out.push(format!("{named} does not list verify in key_ops"));
                continue;
            }
        }
        let pinned = match jwk.common.key_algorithm {
            None => None,
            Some(ka) => match Algorithm::from_str(&ka.to_string()) {
                Ok(a) => Some(a),
                Err(_) => {
                    left_out.push(format!("{named} is for {ka}, not a signature algorithm"));
                    continue;
                }
            },
        };
        let key = match DecodingKey::from_jwk(jwk) {
            Ok(k) => k,
            Err(e) => {
                left_out.push(format!("{named} cannot be used: {e}"));
                continue;
            }
        };
        let fitting = fitting(algorithms, &key, pinned);
        if fitting.is_empty() {
            left_out.push(format!("{named} fits none of the algorithms"));
            continue;
        }
        keys.push(JwtKey {
            kid,
            key,
            algorithms: fitting,
        });
    }
    Ok((keys, left_out))
}

/// The algorithms of `algorithms` that `key` can verify (of its type, and `pinned` if given).
pub(super) fn fitting(
    algorithms: &[Algorithm],
    key: &DecodingKey,
    pinned: Option<Algorithm>,
) -> Vec<Algorithm> {
    let family = key.family();
    algorithms
        .iter()
        .copied()
        .filter(|a| a.family() == family && pinned.is_none_or(|p| p == *a))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_fit_the_algorithms() {
        let doc = br#"{"keys":[
            {"kty":"EC","crv":"P-256","kid":"a","alg":"ES256","use":"sig",
             "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty":"EC","crv":"P-256","kid":"b","alg":"ES384",
             "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty":"oct","kid":"c","k":"c2VjcmV0"},
            {"kty":"EC","crv":"P-256","kid":"d","use":"enc",
             "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty":"EC","crv":"P-256","kid":"e","key_ops":["encrypt"],
             "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty":"RSA","kid":"f","alg":"RSA-OAEP","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB"}
        ]}"#;
        let (keys, out) = read_jwks(doc, &[Algorithm::ES256, Algorithm::RS256]).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("a"));
        assert_eq!(keys[0].algorithms, vec![Algorithm::ES256]);
        assert_eq!(out.len(), 5, "{out:?}");
        assert!(out.iter().any(|o| o.contains("use: enc")), "{out:?}");
        assert!(out.iter().any(|o| o.contains("RSA_OAEP")), "{out:?}");
        assert!(read_jwks(b"{\"keys\": 3}", &[Algorithm::ES256]).is_err());
        assert!(read_jwks(b"<html>", &[Algorithm::ES256]).is_err());
    }
}
