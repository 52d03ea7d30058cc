// The alphabets of the identifiers requests, the configuration and the CLI use, each in one place:
// every check of a key id, an access key id or a key store's name uses these.

/** An externalKeyId: at most 128 characters of A-Z a-z 0-9 - . _ (spec: API operations). */
export const KEY_ID = /^[A-Za-z0-9._-]{1,128}$/;

/** A SigV4 access key id and its secret, as KMS takes them (spec: Appendix A; the KMS console's rules). */
export const ACCESS_KEY_ID = /^[A-Z2-7]{20,30}$/;
export const SECRET_ACCESS_KEY = /^[A-Za-z0-9/+=]{43,64}$/;

/** A key store's path prefix: what comes before `/kms/xks/v1` in XksProxyUriPath, '' or '/a/b'. */
export const PATH_PREFIX = /^(?:\/[A-Za-z0-9_-]+)*$/;

/** A key store's name (in logs, metrics and revocations), and an HSM's name in a fleet. */
export const NAME = /^[A-Za-z0-9._-]{1,64}$/;
