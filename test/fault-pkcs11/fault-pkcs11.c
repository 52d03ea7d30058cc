/*
 * fault-pkcs11: a PKCS#11 module that wraps a real one (SoftHSM by default) and injects faults on
 * demand, so that tests can make the "HSM" fail at the PKCS#11 boundary.
 *
 *   cc -shared -fPIC -O2 -Wall -Wextra -Werror -o fault-pkcs11.so fault-pkcs11.c -ldl -lpthread
 *
 * C_Initialize's argument goes to the target as given, so a target that reads library parameters
 * from its pReserved (NSS softoken) gets them.
 *
 * Environment (read when the module is loaded and again at each C_Initialize):
 *   FAULT_PKCS11_TARGET   the module to wrap; /usr/lib/softhsm/libsofthsm2.so when unset
 *   FAULT_PKCS11_CONTROL  the rules file; re-read whenever its inode, size or mtime (ns) changes.
 *                         Missing or empty: no faults.
 *   FAULT_PKCS11_TRACE    when set, every call appends one line "<function>" to this file
 *
 * Rules, one a line, '#' starts a comment. The first rule that matches the function and has
 * firings left applies; count=N limits its firings, every=N makes it match only the Nth, 2Nth, ...
 * call it would match (the calls in between go on to the next rules); the counters start over when
 * the file changes:
 *   <C_Function|*> fail <CKR_NAME|0xHEX|decimal> [count=N] [every=N]   return that code
 *   <C_Function|*> delay <ms> [jitter=<ms>] [count=N] [every=N]       sleep, then forward
 *   <C_Function|*> hang [count=N] [every=N]                           block until the control file
 *                                                                     changes (polled every 10 ms),
 *                                                                     then apply the new rules to
 *                                                                     this same call
 * `delay` takes fractional milliseconds; with jitter=J each call sleeps a uniformly random time in
 * [ms - J, ms + J] (at least 0). `* delay 2 jitter=0.5` puts the HSM about 2 ms away, as a network
 * HSM is: every PKCS#11 call is a round trip. Put rules for single functions (a slow call, a
 * failure) above it: the first rule that matches applies.
 *
 * `fail` returns without forwarding, except where a real failure would still end something:
 *   - cleanup calls (C_Finalize, C_CloseSession, C_CloseAllSessions, C_FindObjectsFinal) do their
 *     work and then return the injected code, so that a failed cleanup leaks nothing into the
 *     next test step;
 *   - calls that end an active crypto operation (C_Encrypt, C_Decrypt, C_Sign, C_Verify, C_Digest,
 *     their Update and Final, the dual-function updates) are forwarded and their result discarded:
 *     PKCS#11 says a failed call terminates the operation, and without the forward SoftHSM would
 *     answer CKR_OPERATION_ACTIVE to the next Init, which no real HSM does.
 *
 * Isolation: one process may reach the target through several copies of this module at once (two
 * HSMs, one of them faulty), and a process has one copy of the target's state. So this module keeps
 * its own "initialised" flag: C_Initialize accepts a target that is already initialised, and
 * C_Finalize never finalises the target; it closes the sessions opened through this module instead.
 * A user of the target reached directly as well would finalise it under this module's sessions
 * (a proxy under test crashed in SoftHSM's C_Finalize that way): reach it through another copy,
 * built with another prefix for its environment variables (-DFAULT_ENV_PREFIX='"FAULT_OTHER_"'),
 * which then reads no rules meant for this one.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <p11-kit-1/p11-kit/pkcs11.h>

#define DEFAULT_TARGET "/usr/lib/softhsm/libsofthsm2.so"
#ifndef FAULT_ENV_PREFIX
#define FAULT_ENV_PREFIX "FAULT_PKCS11_"
#endif
#define MAX_RULES 64
#define FUNCTION_NAME_MAX 32

enum action { ACTION_FAIL, ACTION_DELAY, ACTION_HANG };

/* What an injected `fail` does to the real call (see the header comment). */
enum on_fail { SKIP, FORWARD };

struct rule {
  char function[FUNCTION_NAME_MAX]; /* empty: any function (`*`) */
  enum action action;
  CK_RV code;
  double ms;
  double jitter;
  long left;  /* firings left; -1: unlimited */
  long every; /* matches only every Nth call of its function; 0: every call */
  long seen;  /* calls of its function met so far (for every=N) */
};

/* Identifies one version of the control file. */
struct version {
  int present;
  dev_t dev;
  ino_t ino;
  off_t size;
  struct timespec mtime;
};

struct tracked {
  CK_SLOT_ID slot;
  CK_SESSION_HANDLE handle;
  CK_FLAGS flags;
};

/* Guards everything below except `initialized`, which has init_lock for its transitions. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;
static char control_path[PATH_MAX];
static char trace_path[PATH_MAX];
static struct version loaded;
static int loaded_valid;
static struct rule rules[MAX_RULES];
static int rule_count;
static struct tracked *sessions;
static size_t session_count, session_capacity;

static uint64_t random_state; /* xorshift64 for jitter, under lock; never 0 */

static CK_FUNCTION_LIST_PTR target;
static atomic_int initialized;

/* ------------------------------------------------------------------------------------------- */
/* Names                                                                                       */

#define CKR_NAMES(X)                                                                            \
  X(CKR_OK) X(CKR_CANCEL) X(CKR_HOST_MEMORY) X(CKR_SLOT_ID_INVALID) X(CKR_GENERAL_ERROR)        \
  X(CKR_FUNCTION_FAILED) X(CKR_ARGUMENTS_BAD) X(CKR_NO_EVENT) X(CKR_NEED_TO_CREATE_THREADS)     \
  X(CKR_CANT_LOCK) X(CKR_ATTRIBUTE_READ_ONLY) X(CKR_ATTRIBUTE_SENSITIVE)                        \
  X(CKR_ATTRIBUTE_TYPE_INVALID) X(CKR_ATTRIBUTE_VALUE_INVALID) X(CKR_ACTION_PROHIBITED)         \
  X(CKR_DATA_INVALID) X(CKR_DATA_LEN_RANGE) X(CKR_DEVICE_ERROR) X(CKR_DEVICE_MEMORY)            \
  X(CKR_DEVICE_REMOVED) X(CKR_ENCRYPTED_DATA_INVALID) X(CKR_ENCRYPTED_DATA_LEN_RANGE)           \
  X(CKR_FUNCTION_CANCELED) X(CKR_FUNCTION_NOT_PARALLEL) X(CKR_FUNCTION_NOT_SUPPORTED)           \
  X(CKR_KEY_HANDLE_INVALID) X(CKR_KEY_SIZE_RANGE) X(CKR_KEY_TYPE_INCONSISTENT)                  \
  X(CKR_KEY_NOT_NEEDED) X(CKR_KEY_CHANGED) X(CKR_KEY_NEEDED) X(CKR_KEY_INDIGESTIBLE)            \
  X(CKR_KEY_FUNCTION_NOT_PERMITTED) X(CKR_KEY_NOT_WRAPPABLE) X(CKR_KEY_UNEXTRACTABLE)           \
  X(CKR_MECHANISM_INVALID) X(CKR_MECHANISM_PARAM_INVALID) X(CKR_OBJECT_HANDLE_INVALID)          \
  X(CKR_OPERATION_ACTIVE) X(CKR_OPERATION_NOT_INITIALIZED) X(CKR_PIN_INCORRECT)                 \
  X(CKR_PIN_INVALID) X(CKR_PIN_LEN_RANGE) X(CKR_PIN_EXPIRED) X(CKR_PIN_LOCKED)                  \
  X(CKR_SESSION_CLOSED) X(CKR_SESSION_COUNT) X(CKR_SESSION_HANDLE_INVALID)                      \
  X(CKR_SESSION_PARALLEL_NOT_SUPPORTED) X(CKR_SESSION_READ_ONLY) X(CKR_SESSION_EXISTS)          \
  X(CKR_SESSION_READ_ONLY_EXISTS) X(CKR_SESSION_READ_WRITE_SO_EXISTS) X(CKR_SIGNATURE_INVALID)  \
  X(CKR_SIGNATURE_LEN_RANGE) X(CKR_TEMPLATE_INCOMPLETE) X(CKR_TEMPLATE_INCONSISTENT)            \
  X(CKR_TOKEN_NOT_PRESENT) X(CKR_TOKEN_NOT_RECOGNIZED) X(CKR_TOKEN_WRITE_PROTECTED)             \
  X(CKR_UNWRAPPING_KEY_SIZE_RANGE) X(CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT)                      \
  X(CKR_USER_ALREADY_LOGGED_IN) X(CKR_USER_NOT_LOGGED_IN) X(CKR_USER_PIN_NOT_INITIALIZED)       \
  X(CKR_USER_TYPE_INVALID) X(CKR_USER_ANOTHER_ALREADY_LOGGED_IN) X(CKR_USER_TOO_MANY_TYPES)     \
  X(CKR_WRAPPED_KEY_INVALID) X(CKR_WRAPPED_KEY_LEN_RANGE) X(CKR_WRAPPING_KEY_HANDLE_INVALID)    \
  X(CKR_WRAPPING_KEY_SIZE_RANGE) X(CKR_WRAPPING_KEY_TYPE_INCONSISTENT)                          \
  X(CKR_RANDOM_SEED_NOT_SUPPORTED) X(CKR_RANDOM_NO_RNG) X(CKR_DOMAIN_PARAMS_INVALID)            \
  X(CKR_CURVE_NOT_SUPPORTED) X(CKR_BUFFER_TOO_SMALL) X(CKR_SAVED_STATE_INVALID)                 \
  X(CKR_INFORMATION_SENSITIVE) X(CKR_STATE_UNSAVEABLE) X(CKR_CRYPTOKI_NOT_INITIALIZED)          \
  X(CKR_CRYPTOKI_ALREADY_INITIALIZED) X(CKR_MUTEX_BAD) X(CKR_MUTEX_NOT_LOCKED)                  \
  X(CKR_NEW_PIN_MODE) X(CKR_NEXT_OTP) X(CKR_EXCEEDED_MAX_ITERATIONS)                            \
  X(CKR_FIPS_SELF_TEST_FAILED) X(CKR_LIBRARY_LOAD_FAILED) X(CKR_PIN_TOO_WEAK)                   \
  X(CKR_PUBLIC_KEY_INVALID) X(CKR_FUNCTION_REJECTED)

static const struct {
  const char *name;
  CK_RV code;
} ckr_names[] = {
#define CKR_ENTRY(name) {#name, name},
    CKR_NAMES(CKR_ENTRY)
#undef CKR_ENTRY
};

/* The functions forwarded as they are: (what `fail` does, name, parameters, arguments). */
#define FORWARDED_FUNCTIONS(X)                                                                          \
  X(SKIP, C_GetSlotList, (CK_BBOOL present, CK_SLOT_ID_PTR list, CK_ULONG_PTR n), (present, list, n))  \
  X(SKIP, C_GetSlotInfo, (CK_SLOT_ID slot, CK_SLOT_INFO_PTR info), (slot, info))                        \
  X(SKIP, C_GetTokenInfo, (CK_SLOT_ID slot, CK_TOKEN_INFO_PTR info), (slot, info))                      \
  X(SKIP, C_WaitForSlotEvent, (CK_FLAGS flags, CK_SLOT_ID_PTR slot, CK_VOID_PTR rsv),                   \
    (flags, slot, rsv))                                                                                 \
  X(SKIP, C_GetMechanismList, (CK_SLOT_ID slot, CK_MECHANISM_TYPE_PTR list, CK_ULONG_PTR n),           \
    (slot, list, n))                                                                                    \
  X(SKIP, C_GetMechanismInfo, (CK_SLOT_ID slot, CK_MECHANISM_TYPE type, CK_MECHANISM_INFO_PTR info),   \
    (slot, type, info))                                                                                 \
  X(SKIP, C_InitToken, (CK_SLOT_ID slot, CK_UTF8CHAR_PTR pin, CK_ULONG pin_len, CK_UTF8CHAR_PTR label), \
    (slot, pin, pin_len, label))                                                                        \
  X(SKIP, C_InitPIN, (CK_SESSION_HANDLE s, CK_UTF8CHAR_PTR pin, CK_ULONG pin_len), (s, pin, pin_len))   \
  X(SKIP, C_SetPIN,                                                                                     \
    (CK_SESSION_HANDLE s, CK_UTF8CHAR_PTR old_pin, CK_ULONG old_len, CK_UTF8CHAR_PTR new_pin,          \
     CK_ULONG new_len),                                                                                 \
    (s, old_pin, old_len, new_pin, new_len))                                                            \
  X(SKIP, C_GetSessionInfo, (CK_SESSION_HANDLE s, CK_SESSION_INFO_PTR info), (s, info))                 \
  X(SKIP, C_GetOperationState, (CK_SESSION_HANDLE s, CK_BYTE_PTR state, CK_ULONG_PTR len),             \
    (s, state, len))                                                                                    \
  X(SKIP, C_SetOperationState,                                                                          \
    (CK_SESSION_HANDLE s, CK_BYTE_PTR state, CK_ULONG len, CK_OBJECT_HANDLE ek, CK_OBJECT_HANDLE ak),  \
    (s, state, len, ek, ak))                                                                            \
  X(SKIP, C_Login, (CK_SESSION_HANDLE s, CK_USER_TYPE user, CK_UTF8CHAR_PTR pin, CK_ULONG pin_len),    \
    (s, user, pin, pin_len))                                                                            \
  X(SKIP, C_Logout, (CK_SESSION_HANDLE s), (s))                                                         \
  X(SKIP, C_CreateObject,                                                                               \
    (CK_SESSION_HANDLE s, CK_ATTRIBUTE_PTR tpl, CK_ULONG n, CK_OBJECT_HANDLE_PTR obj), (s, tpl, n, obj)) \
  X(SKIP, C_CopyObject,                                                                                 \
    (CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj, CK_ATTRIBUTE_PTR tpl, CK_ULONG n,                      \
     CK_OBJECT_HANDLE_PTR copy),                                                                        \
    (s, obj, tpl, n, copy))                                                                             \
  X(SKIP, C_DestroyObject, (CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj), (s, obj))                       \
  X(SKIP, C_GetObjectSize, (CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj, CK_ULONG_PTR size),             \
    (s, obj, size))                                                                                     \
  X(SKIP, C_GetAttributeValue,                                                                          \
    (CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj, CK_ATTRIBUTE_PTR tpl, CK_ULONG n), (s, obj, tpl, n))   \
  X(SKIP, C_SetAttributeValue,                                                                          \
    (CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj, CK_ATTRIBUTE_PTR tpl, CK_ULONG n), (s, obj, tpl, n))   \
  X(SKIP, C_FindObjectsInit, (CK_SESSION_HANDLE s, CK_ATTRIBUTE_PTR tpl, CK_ULONG n), (s, tpl, n))      \
  X(SKIP, C_FindObjects,                                                                                \
    (CK_SESSION_HANDLE s, CK_OBJECT_HANDLE_PTR objs, CK_ULONG max, CK_ULONG_PTR n), (s, objs, max, n)) \
  X(FORWARD, C_FindObjectsFinal, (CK_SESSION_HANDLE s), (s))                                            \
  X(SKIP, C_EncryptInit, (CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE key), (s, m, key))  \
  X(FORWARD, C_Encrypt, (CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG in_len, CK_BYTE_PTR out,        \
                         CK_ULONG_PTR out_len), (s, in, in_len, out, out_len))                          \
  X(FORWARD, C_EncryptUpdate, (CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG in_len, CK_BYTE_PTR out,  \
                               CK_ULONG_PTR out_len), (s, in, in_len, out, out_len))                    \
  X(FORWARD, C_EncryptFinal, (CK_SESSION_HANDLE s, CK_BYTE_PTR out, CK_ULONG_PTR out_len),             \
    (s, out, out_len))                                                                                  \
  X(SKIP, C_DecryptInit, (CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE key), (s, m, key))  \
  X(FORWARD, C_Decrypt, (CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG in_len, CK_BYTE_PTR out,        \
                         CK_ULONG_PTR out_len), (s, in, in_len, out, out_len))                          \
  X(FORWARD, C_DecryptUpdate, (CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG in_len, CK_BYTE_PTR out,  \
                               CK_ULONG_PTR out_len), (s, in, in_len, out, out_len))                    \
  X(FORWARD, C_DecryptFinal, (CK_SESSION_HANDLE s, CK_BYTE_PTR out, CK_ULONG_PTR out_len),             \
    (s, out, out_len))                                                                                  \
  X(SKIP, C_DigestInit, (CK_SESSION_HANDLE s, CK_MECHANISM_PTR m), (s, m))                              \
  X(FORWARD, C_Digest, (CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG in_len, CK_BYTE_PTR out,         \
                        CK_ULONG_PTR out_len), (s, in, in_len, out, out_len))                           \
  X(FORWARD, C_DigestUpdate, (CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG in_len), (s, in, in_len))   \
  X(FORWARD, C_DigestKey, (CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key), (s, key))                        \
  X(FORWARD, C_DigestFinal, (CK_SESSION_HANDLE s, CK_BYTE_PTR out, CK_ULONG_PTR out_len),              \
    (s, out, out_len))                                                                                  \
  X(SKIP, C_SignInit, (CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE key), (s, m, key))     \
  X(FORWARD, C_Sign, (CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG in_len, CK_BYTE_PTR out,           \
                      CK_ULONG_PTR out_len), (s, in, in_len, out, out_len))                             \
  X(FORWARD, C_SignUpdate, (CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG in_len), (s, in, in_len))     \
  X(FORWARD, C_SignFinal, (CK_SESSION_HANDLE s, CK_BYTE_PTR out, CK_ULONG_PTR out_len),                \
    (s, out, out_len))                                                                                  \
  X(SKIP, C_SignRecoverInit, (CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE key),          \
    (s, m, key))                                                                                        \
  X(FORWARD, C_SignRecover, (CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG in_len, CK_BYTE_PTR out,    \
                             CK_ULONG_PTR out_len), (s, in, in_len, out, out_len))                      \
  X(SKIP, C_VerifyInit, (CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE key), (s, m, key))   \
  X(FORWARD, C_Verify, (CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG in_len, CK_BYTE_PTR sig,         \
                        CK_ULONG sig_len), (s, in, in_len, sig, sig_len))                               \
  X(FORWARD, C_VerifyUpdate, (CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG in_len), (s, in, in_len))   \
  X(FORWARD, C_VerifyFinal, (CK_SESSION_HANDLE s, CK_BYTE_PTR sig, CK_ULONG sig_len), (s, sig, sig_len)) \
  X(SKIP, C_VerifyRecoverInit, (CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE key),        \
    (s, m, key))                                                                                        \
  X(FORWARD, C_VerifyRecover, (CK_SESSION_HANDLE s, CK_BYTE_PTR sig, CK_ULONG sig_len, CK_BYTE_PTR out, \
                               CK_ULONG_PTR out_len), (s, sig, sig_len, out, out_len))                  \
  X(FORWARD, C_DigestEncryptUpdate, (CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG in_len,             \
                                     CK_BYTE_PTR out, CK_ULONG_PTR out_len),                            \
    (s, in, in_len, out, out_len))                                                                      \
  X(FORWARD, C_DecryptDigestUpdate, (CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG in_len,             \
                                     CK_BYTE_PTR out, CK_ULONG_PTR out_len),                            \
    (s, in, in_len, out, out_len))                                                                      \
  X(FORWARD, C_SignEncryptUpdate, (CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG in_len,               \
                                   CK_BYTE_PTR out, CK_ULONG_PTR out_len),                              \
    (s, in, in_len, out, out_len))                                                                      \
  X(FORWARD, C_DecryptVerifyUpdate, (CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG in_len,             \
                                     CK_BYTE_PTR out, CK_ULONG_PTR out_len),                            \
    (s, in, in_len, out, out_len))                                                                      \
  X(SKIP, C_GenerateKey,                                                                                \
    (CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_ATTRIBUTE_PTR tpl, CK_ULONG n, CK_OBJECT_HANDLE_PTR key), \
    (s, m, tpl, n, key))                                                                                \
  X(SKIP, C_GenerateKeyPair,                                                                            \
    (CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_ATTRIBUTE_PTR pub_tpl, CK_ULONG pub_n,                \
     CK_ATTRIBUTE_PTR priv_tpl, CK_ULONG priv_n, CK_OBJECT_HANDLE_PTR pub, CK_OBJECT_HANDLE_PTR priv), \
    (s, m, pub_tpl, pub_n, priv_tpl, priv_n, pub, priv))                                                \
  X(SKIP, C_WrapKey,                                                                                    \
    (CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE wrapping, CK_OBJECT_HANDLE key,         \
     CK_BYTE_PTR out, CK_ULONG_PTR out_len),                                                            \
    (s, m, wrapping, key, out, out_len))                                                                \
  X(SKIP, C_UnwrapKey,                                                                                  \
    (CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE unwrapping, CK_BYTE_PTR in,             \
     CK_ULONG in_len, CK_ATTRIBUTE_PTR tpl, CK_ULONG n, CK_OBJECT_HANDLE_PTR key),                      \
    (s, m, unwrapping, in, in_len, tpl, n, key))                                                        \
  X(SKIP, C_DeriveKey,                                                                                  \
    (CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE base, CK_ATTRIBUTE_PTR tpl, CK_ULONG n, \
     CK_OBJECT_HANDLE_PTR key),                                                                         \
    (s, m, base, tpl, n, key))                                                                          \
  X(SKIP, C_SeedRandom, (CK_SESSION_HANDLE s, CK_BYTE_PTR seed, CK_ULONG len), (s, seed, len))          \
  X(SKIP, C_GenerateRandom, (CK_SESSION_HANDLE s, CK_BYTE_PTR out, CK_ULONG len), (s, out, len))        \
  X(SKIP, C_GetFunctionStatus, (CK_SESSION_HANDLE s), (s))                                              \
  X(SKIP, C_CancelFunction, (CK_SESSION_HANDLE s), (s))

/* Every function a rule may name: the forwarded ones and those this module implements itself. */
static const char *const function_names[] = {
    "C_Initialize", "C_Finalize", "C_GetInfo", "C_GetFunctionList", "C_OpenSession",
    "C_CloseSession", "C_CloseAllSessions",
#define NAME_OF(on_fail, name, params, args) #name,
    FORWARDED_FUNCTIONS(NAME_OF)
#undef NAME_OF
};

static int known_function(const char *name) {
  for (size_t i = 0; i < sizeof function_names / sizeof function_names[0]; i++) {
    if (strcmp(function_names[i], name) == 0) return 1;
  }
  return 0;
}

/* ------------------------------------------------------------------------------------------- */
/* Rules                                                                                       */

static void sleep_ms(double ms) {
  if (ms <= 0) return;
  long ns = (long)(ms * 1e6);
  struct timespec left = {ns / 1000000000L, ns % 1000000000L};
  while (nanosleep(&left, &left) != 0 && errno == EINTR) {
  }
}

/* A uniformly random number in [-1, 1]. */
static double random_unit_locked(void) {
  if (random_state == 0) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    random_state = ((uint64_t)now.tv_nsec << 20) ^ (uint64_t)now.tv_sec ^ ((uint64_t)getpid() << 40) ^ 1;
  }
  random_state ^= random_state << 13;
  random_state ^= random_state >> 7;
  random_state ^= random_state << 17;
  return (double)(random_state >> 11) / (double)(1ULL << 52) - 1.0;
}

static void version_from_stat(const struct stat *st, struct version *v) {
  v->present = 1;
  v->dev = st->st_dev;
  v->ino = st->st_ino;
  v->size = st->st_size;
  v->mtime = st->st_mtim;
}

static void version_of(const char *path, struct version *v) {
  struct stat st;
  memset(v, 0, sizeof *v);
  if (path[0] != '\0' && stat(path, &st) == 0) version_from_stat(&st, v);
}

static int same_version(const struct version *a, const struct version *b) {
  if (!a->present || !b->present) return a->present == b->present;
  return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
         a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec;
}

static int parse_code(const char *text, CK_RV *code) {
  for (size_t i = 0; i < sizeof ckr_names / sizeof ckr_names[0]; i++) {
    if (strcmp(ckr_names[i].name, text) == 0) {
      *code = ckr_names[i].code;
      return 1;
    }
  }
  char *end;
  errno = 0;
  unsigned long value = strtoul(text, &end, 0);
  if (errno != 0 || end == text || *end != '\0' || text[0] == '-') return 0;
  *code = value;
  return 1;
}

static int parse_long(const char *text, long *out) {
  char *end;
  errno = 0;
  long value = strtol(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || value < 0) return 0;
  *out = value;
  return 1;
}

static int parse_ms(const char *text, double *out) {
  char *end;
  errno = 0;
  double value = strtod(text, &end);
  if (errno != 0 || end == text || *end != '\0' || !(value >= 0 && value <= 3600e3)) return 0;
  *out = value;
  return 1;
}

/* 1: a rule; 0: a blank or comment line; -1: a line it cannot understand. */
static int parse_rule(char *line, struct rule *r) {
  char *hash = strchr(line, '#');
  if (hash != NULL) *hash = '\0';
  char *words[7];
  int n = 0;
  char *save = NULL;
  for (char *w = strtok_r(line, " \t\r\n", &save); w != NULL; w = strtok_r(NULL, " \t\r\n", &save)) {
    if (n == 7) return -1;
    words[n++] = w;
  }
  if (n == 0) return 0;
  if (n < 2) return -1;
  memset(r, 0, sizeof *r);
  r->left = -1;
  if (strcmp(words[0], "*") != 0) {
    if (!known_function(words[0])) return -1;
    snprintf(r->function, sizeof r->function, "%s", words[0]);
  }
  int next;
  if (strcmp(words[1], "fail") == 0) {
    if (n < 3 || !parse_code(words[2], &r->code)) return -1;
    r->action = ACTION_FAIL;
    next = 3;
  } else if (strcmp(words[1], "delay") == 0) {
    if (n < 3 || !parse_ms(words[2], &r->ms)) return -1;
    r->action = ACTION_DELAY;
    next = 3;
  } else if (strcmp(words[1], "hang") == 0) {
    r->action = ACTION_HANG;
    next = 2;
  } else {
    return -1;
  }
  for (; next < n; next++) {
    const char *w = words[next];
    if (strncmp(w, "count=", 6) == 0) {
      if (!parse_long(w + 6, &r->left)) return -1;
    } else if (strncmp(w, "every=", 6) == 0) {
      if (!parse_long(w + 6, &r->every) || r->every == 0) return -1;
    } else if (strncmp(w, "jitter=", 7) == 0 && r->action == ACTION_DELAY) {
      if (!parse_ms(w + 7, &r->jitter)) return -1;
    } else {
      return -1;
    }
  }
  return 1;
}

/* Re-reads the rules when the control file is another version than the one loaded. */
static void reload_locked(void) {
  struct version now;
  version_of(control_path, &now);
  if (loaded_valid && same_version(&now, &loaded)) return;
  rule_count = 0;
  loaded_valid = 1;
  memset(&loaded, 0, sizeof loaded);
  FILE *file = control_path[0] != '\0' ? fopen(control_path, "re") : NULL;
  if (file == NULL) return; /* no file: no faults */
  /* The version of what is read, not of what was stat'ed: the file may be replaced in between. */
  struct stat st;
  if (fstat(fileno(file), &st) == 0) version_from_stat(&st, &loaded);
  char line[512];
  int number = 0;
  while (fgets(line, sizeof line, file) != NULL) {
    number++;
    struct rule r;
    int parsed = parse_rule(line, &r);
    if (parsed < 0) {
      /* A typo must not quietly turn a fault test into a test of nothing. */
      fprintf(stderr, "fault-pkcs11: %s:%d: ignoring a line that is not a rule\n", control_path, number);
    } else if (parsed > 0 && rule_count == MAX_RULES) {
      fprintf(stderr, "fault-pkcs11: %s:%d: ignoring rules past the %dth\n", control_path, number, MAX_RULES);
    } else if (parsed > 0) {
      rules[rule_count++] = r;
    }
  }
  fclose(file);
}

static void trace_locked(const char *function) {
  if (trace_path[0] == '\0') return;
  /* Opened per call so that the tests may truncate or replace the file at any time. */
  int fd = open(trace_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return;
  char line[FUNCTION_NAME_MAX + 2];
  int len = snprintf(line, sizeof line, "%s\n", function);
  ssize_t written = write(fd, line, (size_t)len);
  (void)written;
  close(fd);
}

/*
 * Traces the call and applies the rules: sleeps for `delay`, blocks for `hang`. Returns 1 with
 * *code set when the call must fail.
 */
static int intercept(const char *function, CK_RV *code) {
  int traced = 0;
  for (;;) {
    struct rule fired;
    int found = 0;
    struct version at;
    char path[PATH_MAX];
    pthread_mutex_lock(&lock);
    if (!traced) trace_locked(function);
    traced = 1;
    reload_locked();
    for (int i = 0; i < rule_count && !found; i++) {
      struct rule *r = &rules[i];
      if (r->left == 0 || (r->function[0] != '\0' && strcmp(r->function, function) != 0)) continue;
      if (r->every > 0 && ++r->seen % r->every != 0) continue;
      if (r->left > 0) r->left--;
      fired = *r;
      if (fired.jitter > 0) fired.ms += fired.jitter * random_unit_locked();
      found = 1;
    }
    at = loaded;
    memcpy(path, control_path, sizeof path);
    pthread_mutex_unlock(&lock);
    if (!found) return 0;
    switch (fired.action) {
      case ACTION_FAIL:
        *code = fired.code;
        return 1;
      case ACTION_DELAY:
        sleep_ms(fired.ms);
        return 0;
      case ACTION_HANG:
        /* Not under the lock: the other threads' calls go on meanwhile. */
        for (struct version now = at; same_version(&now, &at); version_of(path, &now)) sleep_ms(10);
        break; /* then this call meets the new rules */
    }
  }
}

static void read_environment_locked(void) {
  const char *control = getenv(FAULT_ENV_PREFIX "CONTROL");
  const char *trace = getenv(FAULT_ENV_PREFIX "TRACE");
  char previous[PATH_MAX];
  memcpy(previous, control_path, sizeof previous);
  snprintf(control_path, sizeof control_path, "%s", control != NULL ? control : "");
  snprintf(trace_path, sizeof trace_path, "%s", trace != NULL ? trace : "");
  if (strcmp(previous, control_path) != 0) loaded_valid = 0;
}

/* ------------------------------------------------------------------------------------------- */
/* Sessions opened through this module                                                         */

static int track(CK_SLOT_ID slot, CK_SESSION_HANDLE handle, CK_FLAGS flags) {
  pthread_mutex_lock(&lock);
  int ok = 1;
  if (session_count == session_capacity) {
    size_t capacity = session_capacity == 0 ? 16 : session_capacity * 2;
    struct tracked *grown = realloc(sessions, capacity * sizeof *grown);
    if (grown == NULL) {
      ok = 0;
    } else {
      sessions = grown;
      session_capacity = capacity;
    }
  }
  if (ok) sessions[session_count++] = (struct tracked){slot, handle, flags};
  pthread_mutex_unlock(&lock);
  return ok;
}

static void untrack(CK_SESSION_HANDLE handle) {
  pthread_mutex_lock(&lock);
  for (size_t i = 0; i < session_count; i++) {
    if (sessions[i].handle == handle) {
      sessions[i] = sessions[--session_count];
      break;
    }
  }
  pthread_mutex_unlock(&lock);
}

/* Removes the sessions of `slot` (of every slot when `all`) from the list and returns them. */
static struct tracked *take_sessions(int all, CK_SLOT_ID slot, size_t *n) {
  pthread_mutex_lock(&lock);
  struct tracked *taken = malloc((session_count + 1) * sizeof *taken);
  *n = 0;
  if (taken != NULL) {
    for (size_t i = 0; i < session_count;) {
      if (all || sessions[i].slot == slot) {
        taken[(*n)++] = sessions[i];
        sessions[i] = sessions[--session_count];
      } else {
        i++;
      }
    }
  }
  pthread_mutex_unlock(&lock);
  return taken;
}

/* The target lost its state (finalised by its other user): the sessions died with it. */
static CK_RV forwarded(CK_RV rv) {
  if (rv == CKR_CRYPTOKI_NOT_INITIALIZED) {
    size_t n;
    free(take_sessions(1, 0, &n));
  }
  return rv;
}

/*
 * Closes sessions this module opened, making sure each handle still names one of them: if the
 * target's other user finalised and re-initialised it, SoftHSM numbers its handles from 1 again,
 * and a stale handle could name the healthy user's session. Within one initialisation SoftHSM never
 * reuses a handle, so a fresh session numbered below ours proves such a restart.
 */
static void close_sessions(struct tracked *list, size_t n) {
  if (list == NULL || n == 0) return;
  CK_SESSION_HANDLE newest = 0;
  for (size_t i = 0; i < n; i++) {
    if (list[i].handle > newest) newest = list[i].handle;
  }
  CK_SESSION_HANDLE probe;
  CK_RV rv = target->C_OpenSession(list[0].slot, CKF_SERIAL_SESSION, NULL, NULL, &probe);
  if (rv == CKR_CRYPTOKI_NOT_INITIALIZED) return;
  int restarted = rv == CKR_OK && probe <= newest;
  if (!restarted) {
    for (size_t i = 0; i < n; i++) {
      CK_SESSION_INFO info;
      if (target->C_GetSessionInfo(list[i].handle, &info) != CKR_OK) continue;
      if (info.slotID != list[i].slot || (info.flags & CKF_RW_SESSION) != (list[i].flags & CKF_RW_SESSION))
        continue;
      target->C_CloseSession(list[i].handle);
    }
  }
  if (rv == CKR_OK) target->C_CloseSession(probe);
}

/* ------------------------------------------------------------------------------------------- */
/* The function list                                                                           */

#define DEFINE_FORWARDER(on_fail, name, params, args)                                           \
  static CK_RV fw_##name params {                                                               \
    CK_RV injected;                                                                             \
    int fail = intercept(#name, &injected);                                                     \
    if (fail && (on_fail) == SKIP) return injected;                                             \
    CK_RV rv = atomic_load(&initialized) ? forwarded(target->name args) : CKR_CRYPTOKI_NOT_INITIALIZED; \
    return fail ? injected : rv;                                                                \
  }
FORWARDED_FUNCTIONS(DEFINE_FORWARDER)
#undef DEFINE_FORWARDER

static CK_RV fw_C_Initialize(CK_VOID_PTR args) {
  pthread_mutex_lock(&lock);
  read_environment_locked();
  pthread_mutex_unlock(&lock);
  CK_RV rv;
  if (intercept("C_Initialize", &rv)) return rv;
  pthread_mutex_lock(&init_lock);
  if (atomic_load(&initialized)) {
    rv = CKR_CRYPTOKI_ALREADY_INITIALIZED;
  } else {
    rv = target->C_Initialize(args);
    if (rv == CKR_OK) {
      /* The target was not initialised: whatever this module had open died with its state. */
      size_t n;
      free(take_sessions(1, 0, &n));
    }
    if (rv == CKR_OK || rv == CKR_CRYPTOKI_ALREADY_INITIALIZED) {
      atomic_store(&initialized, 1);
      rv = CKR_OK;
    }
  }
  pthread_mutex_unlock(&init_lock);
  return rv;
}

static CK_RV fw_C_Finalize(CK_VOID_PTR reserved_ptr) {
  CK_RV injected;
  int fail = intercept("C_Finalize", &injected);
  CK_RV rv = CKR_OK;
  pthread_mutex_lock(&init_lock);
  if (!atomic_load(&initialized)) {
    rv = CKR_CRYPTOKI_NOT_INITIALIZED;
  } else if (reserved_ptr != NULL) {
    rv = CKR_ARGUMENTS_BAD;
  } else {
    /* Never the target's C_Finalize: it would end the sessions of the target's other users. */
    atomic_store(&initialized, 0);
    size_t n;
    struct tracked *list = take_sessions(1, 0, &n);
    close_sessions(list, n);
    free(list);
  }
  pthread_mutex_unlock(&init_lock);
  return fail ? injected : rv;
}

static void pad(CK_UTF8CHAR *field, size_t size, const char *text) {
  size_t len = strlen(text);
  if (len > size) len = size;
  memcpy(field, text, len);
  memset(field + len, ' ', size - len);
}

static CK_RV fw_C_GetInfo(CK_INFO_PTR info) {
  CK_RV rv;
  if (intercept("C_GetInfo", &rv)) return rv;
  if (!atomic_load(&initialized)) return CKR_CRYPTOKI_NOT_INITIALIZED;
  rv = forwarded(target->C_GetInfo(info));
  if (rv != CKR_OK) return rv;
  /* Says what is answering, keeping the target's name: "fault-pkcs11 over SoftHSM". */
  int len = (int)sizeof info->manufacturerID;
  while (len > 0 && (info->manufacturerID[len - 1] == ' ' || info->manufacturerID[len - 1] == '\0')) len--;
  char text[64];
  snprintf(text, sizeof text, "fault-pkcs11 over %.*s", len, (const char *)info->manufacturerID);
  pad(info->manufacturerID, sizeof info->manufacturerID, text);
  pad(info->libraryDescription, sizeof info->libraryDescription, "Fault-injecting PKCS#11 wrapper");
  return CKR_OK;
}

static CK_RV fw_C_OpenSession(CK_SLOT_ID slot, CK_FLAGS flags, CK_VOID_PTR application, CK_NOTIFY notify,
                              CK_SESSION_HANDLE_PTR session) {
  CK_RV rv;
  if (intercept("C_OpenSession", &rv)) return rv;
  if (!atomic_load(&initialized)) return CKR_CRYPTOKI_NOT_INITIALIZED;
  rv = forwarded(target->C_OpenSession(slot, flags, application, notify, session));
  if (rv == CKR_OK && !track(slot, *session, flags)) {
    target->C_CloseSession(*session);
    return CKR_HOST_MEMORY;
  }
  return rv;
}

static CK_RV fw_C_CloseSession(CK_SESSION_HANDLE session) {
  CK_RV injected;
  int fail = intercept("C_CloseSession", &injected);
  CK_RV rv = CKR_CRYPTOKI_NOT_INITIALIZED;
  if (atomic_load(&initialized)) {
    rv = forwarded(target->C_CloseSession(session));
    untrack(session);
  }
  return fail ? injected : rv;
}

/* Closes this module's sessions on the slot only: the target's would close its other users' too. */
static CK_RV fw_C_CloseAllSessions(CK_SLOT_ID slot) {
  CK_RV injected;
  int fail = intercept("C_CloseAllSessions", &injected);
  CK_RV rv = CKR_CRYPTOKI_NOT_INITIALIZED;
  if (atomic_load(&initialized)) {
    CK_SLOT_INFO info;
    rv = forwarded(target->C_GetSlotInfo(slot, &info));
    if (rv == CKR_OK) {
      size_t n;
      struct tracked *list = take_sessions(0, slot, &n);
      for (size_t i = 0; list != NULL && i < n; i++) target->C_CloseSession(list[i].handle);
      free(list);
    }
  }
  return fail ? injected : rv;
}

static CK_FUNCTION_LIST function_list;

static CK_RV load_target_locked(void) {
  if (target != NULL) return CKR_OK;
  const char *path = getenv(FAULT_ENV_PREFIX "TARGET");
  if (path == NULL || path[0] == '\0') path = DEFAULT_TARGET;
  void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (handle == NULL) {
    fprintf(stderr, "fault-pkcs11: cannot load %s: %s\n", path, dlerror());
    return CKR_GENERAL_ERROR;
  }
  CK_C_GetFunctionList get = (CK_C_GetFunctionList)dlsym(handle, "C_GetFunctionList");
  CK_FUNCTION_LIST_PTR list = NULL;
  CK_RV rv = get != NULL ? get(&list) : CKR_GENERAL_ERROR;
  if (rv != CKR_OK || list == NULL) {
    fprintf(stderr, "fault-pkcs11: %s has no usable C_GetFunctionList\n", path);
    dlclose(handle);
    return rv != CKR_OK ? rv : CKR_GENERAL_ERROR;
  }
  /* Never dlclose()d: see unload(). */
  target = list;
  return CKR_OK;
}

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list) {
  pthread_mutex_lock(&lock);
  read_environment_locked();
  CK_RV rv = load_target_locked();
  pthread_mutex_unlock(&lock);
  CK_RV injected;
  if (intercept("C_GetFunctionList", &injected)) return injected;
  if (rv != CKR_OK) return rv;
  if (list == NULL) return CKR_ARGUMENTS_BAD;
  *list = &function_list;
  return CKR_OK;
}

static CK_FUNCTION_LIST function_list = {
    .version = {2, 40},
    .C_Initialize = fw_C_Initialize,
    .C_Finalize = fw_C_Finalize,
    .C_GetInfo = fw_C_GetInfo,
    .C_GetFunctionList = C_GetFunctionList,
    .C_OpenSession = fw_C_OpenSession,
    .C_CloseSession = fw_C_CloseSession,
    .C_CloseAllSessions = fw_C_CloseAllSessions,
#define LIST_ENTRY(on_fail, name, params, args) .name = fw_##name,
    FORWARDED_FUNCTIONS(LIST_ENTRY)
#undef LIST_ENTRY
};

/*
 * The target stays loaded when this module is unloaded: it may still be initialised (this module
 * never finalises it) and in use by its other users, whose own handle on it may go first.
 */
__attribute__((destructor)) static void unload(void) { free(sessions); }
