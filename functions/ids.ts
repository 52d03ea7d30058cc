// The alphabets of the names requests and the configuration use, each in one place: every check of
// a key id (requests, configuration, revocations, the CLI) and of a key store's name uses these.

/** An externalKeyId: at most 128 characters of A-Z a-z 0-9 - . _ (spec: API operations). */
export const KEY_ID = /^[A-Za-z0-9._-]{1,128}$/;

/** A key store's name (in logs, metrics and revocations), and an HSM's name in a fleet. */
export const NAME = /^[A-Za-z0-9._-]{1,64}$/;
