// Secondary authorization with Cedar (spec: Authorization; Logging; Appendix B): a customer's
// policy set decides, after SigV4, whether an AWS principal may use an external key. Deny by
// default: without a matching permit, or with a matching forbid, the request is refused, and the
// decision names the policies that determined it so the log can show the denying statement.
//
// The policy set is parsed, checked and pre-parsed into cedar-wasm's cache once, at start-up; a
// decision then only ships the request's two entities and its context into wasm.
import { createRequire } from 'node:module';
import type { RequestMetadata } from './schemas.ts';

type CedarWasm = typeof import('@cedar-policy/cedar-wasm/nodejs');
type DetailedError = import('@cedar-policy/cedar-wasm/nodejs').DetailedError;
type CedarValueJson = import('@cedar-policy/cedar-wasm/nodejs').CedarValueJson;
type EntityJson = import('@cedar-policy/cedar-wasm/nodejs').EntityJson;

// The nodejs build loads its wasm (about 4 MB) synchronously from beside the module; loaded only
// when a policy set is configured, so a proxy without one never pays for it. Outside the bundle:
// it ships in the PKCS#11 layer (/opt/nodejs/node_modules), which only `require` finds.
let loaded: CedarWasm | undefined;
function cedarWasm(): CedarWasm {
  loaded ??= createRequire(import.meta.url)('@cedar-policy/cedar-wasm/nodejs') as CedarWasm;
  return loaded;
}

export type AuthorizedOperation = 'GetKeyMetadata' | 'Encrypt' | 'Decrypt';

/** The requestMetadata fields the proxy hands to policies (spec: GetKeyMetadata, Encrypt, Decrypt). */
export type AuthorizationRequestMetadata = RequestMetadata;

export interface AuthorizationInput {
  operation: AuthorizedOperation;
  /** The key store's name. */
  keystore: string;
  /** The path's externalKeyId. */
  keyId: string;
  requestMetadata: AuthorizationRequestMetadata;
}

export interface AuthorizationDecision {
  allowed: boolean;
  /** The determining policies (their @id): the permits that allowed, or the forbids that denied. Empty on a default deny. */
  policyIds: string[];
  /** Policies that failed to evaluate (and so did not apply), or why no evaluation happened. */
  errors: string[];
}

export interface Authorizer {
  /** The label given to createAuthorizer. */
  readonly id: string;
  /** Every policy's id, in the order of the policy text. */
  readonly policyIds: readonly string[];
  /**
   * Findings of Cedar's strict validator against SCHEMA (typos in attribute or action names,
   * unguarded optional attributes, impossible policies). Not fatal: log them at start-up.
   */
  readonly warnings: readonly string[];
  authorize(input: AuthorizationInput): AuthorizationDecision;
}

export const NAMESPACE = 'XksProxy';
const PRINCIPAL_TYPE = `${NAMESPACE}::AwsPrincipal`;
const RESOURCE_TYPE = `${NAMESPACE}::ExternalKey`;
const ACTION_TYPE = `${NAMESPACE}::Action`;

/**
 * The entity model as a Cedar schema. Not used per decision (that would cost a request check
 * each time); only to validate policies at start-up and to document what they can rely on.
 */
export const SCHEMA = `namespace ${NAMESPACE} {
  entity AwsPrincipal = { arn: String, account?: String };
  entity ExternalKey = { id: String, keystore: String };
  type RequestContext = {
    kmsOperation: String,
    kmsKeyArn?: String,
    kmsKeyRegion?: String,
    kmsKeyAccount?: String,
    awsSourceVpc?: String,
    awsSourceVpce?: String,
    kmsViaService?: String,
  };
  action GetKeyMetadata, Encrypt, Decrypt
    appliesTo { principal: AwsPrincipal, resource: ExternalKey, context: RequestContext };
}`;

// IAM users and roles, and STS assumed roles / federated users, carry the caller's account;
// service principals (ec2.amazonaws.com) and "AWS Internal" do not.
const PRINCIPAL_ACCOUNT = /^arn:[a-z0-9-]+:(?:iam|sts)::(\d{12}):/;
// Lenient after the account: the spec's own example writes `...:123456789012:/key/<id>`.
const KMS_KEY_ARN = /^arn:[a-z0-9-]+:kms:([a-z0-9-]+):(\d{12}):/;

// Policy sets are cached in wasm by id for the life of the process; a sequence number keeps two
// authorizers (say, after a reload, or in tests) from silently replacing each other's policies.
let preparsedCount = 0;

/**
 * Parses `policyText` (Cedar policies, optionally `@id("...")`-annotated) once, and returns an
 * authorizer. Throws at start-up when the text does not parse, holds templates, or repeats an id.
 * `id` labels the set in errors and logs (e.g. the key store's name).
 */
export function createAuthorizer(policyText: string, id: string): Authorizer {
  const policies = splitPolicies(policyText, id);
  const psetId = `${id}#${++preparsedCount}`;
  const preparsed = cedarWasm().preparsePolicySet(psetId, { staticPolicies: policies });
  if (preparsed.type === 'failure') {
    throw new Error(`Cedar policy set ${id}: ${describeErrors(preparsed.errors)}`);
  }
  const policyIds = Object.keys(policies);
  const warnings = validate(policies);

  return {
    id,
    policyIds,
    warnings,
    authorize(input: AuthorizationInput): AuthorizationDecision {
      const m = input.requestMetadata;
      if (typeof m.awsPrincipalArn !== 'string') {
        // Required by the spec for all three operations; never guess a principal.
        return { allowed: false, policyIds: [], errors: ['requestMetadata.awsPrincipalArn is missing'] };
      }
      const principal = { type: PRINCIPAL_TYPE, id: m.awsPrincipalArn };
      const resource = { type: RESOURCE_TYPE, id: input.keyId };
      const entities: EntityJson[] = [
        { uid: principal, attrs: principalAttrs(m.awsPrincipalArn), parents: [] },
        { uid: resource, attrs: { id: input.keyId, keystore: input.keystore }, parents: [] },
      ];
      let answer: ReturnType<CedarWasm['statefulIsAuthorized']>;
      try {
        answer = cedarWasm().statefulIsAuthorized({
          principal,
          action: { type: ACTION_TYPE, id: input.operation },
          resource,
          context: requestContext(m),
          entities,
          preparsedPolicySetId: psetId,
        });
      } catch (error) {
        // Fail closed whatever wasm does.
        return { allowed: false, policyIds: [], errors: [`Cedar: ${(error as Error).message}`] };
      }
      if (answer.type === 'failure') {
        return { allowed: false, policyIds: [], errors: answer.errors.map((e) => e.message) };
      }
      const { decision, diagnostics } = answer.response;
      return {
        allowed: decision === 'allow',
        policyIds: diagnostics.reason,
        errors: diagnostics.errors.map((e) => `${e.policyId}: ${e.error.message}`),
      };
    },
  };
}

/** Principal attributes: `account` only when the ARN has one, so `principal has account` means it. */
export function principalAttrs(arn: string): Record<string, CedarValueJson> {
  const account = PRINCIPAL_ACCOUNT.exec(arn)?.[1];
  return account === undefined ? { arn } : { arn, account };
}

/** The context record; optional fields absent (not '') when KMS did not send them. */
export function requestContext(m: AuthorizationRequestMetadata): Record<string, CedarValueJson> {
  const context: Record<string, CedarValueJson> = {};
  if (m.kmsOperation !== undefined) context.kmsOperation = m.kmsOperation;
  if (m.kmsKeyArn !== undefined) {
    context.kmsKeyArn = m.kmsKeyArn;
    const parsed = KMS_KEY_ARN.exec(m.kmsKeyArn);
    if (parsed?.[1] !== undefined && parsed[2] !== undefined) {
      context.kmsKeyRegion = parsed[1];
      context.kmsKeyAccount = parsed[2];
    }
  }
  if (m.awsSourceVpc !== undefined) context.awsSourceVpc = m.awsSourceVpc;
  if (m.awsSourceVpce !== undefined) context.awsSourceVpce = m.awsSourceVpce;
  if (m.kmsViaService !== undefined) context.kmsViaService = m.kmsViaService;
  return context;
}

/**
 * The policies keyed by their @id, or by `policy<N>` (N = position in the text, as Cedar itself
 * numbers them) when they have none. Cedar reports decisions by these keys.
 */
function splitPolicies(policyText: string, label: string): Record<string, string> {
  const parts = cedarWasm().policySetTextToParts(policyText);
  if (parts.type === 'failure') {
    throw new Error(`Cedar policy set ${label} does not parse: ${describeErrors(parts.errors, policyText)}`);
  }
  if (parts.policy_templates.length > 0) {
    throw new Error(`Cedar policy set ${label}: templates (?principal, ?resource) are not supported`);
  }
  // policySetTextToParts returns the policies sorted by their default ids as strings (policy0,
  // policy1, policy10, policy11, policy2, ...), not in text order: sorting those ids the same way
  // gives each part back its position.
  const defaultIds = parts.policies.map((_, n) => `policy${n}`).sort();
  const entries: Array<[position: number, id: string, text: string]> = [];
  const seen = new Set<string>();
  for (const [k, text] of parts.policies.entries()) {
    const defaultId = defaultIds[k] as string;
    const json = cedarWasm().policyToJson(text);
    if (json.type === 'failure') {
      throw new Error(`Cedar policy set ${label}, ${defaultId}: ${describeErrors(json.errors)}`);
    }
    const annotated = json.json.annotations?.id;
    if (annotated !== undefined && annotated.trim() === '') {
      throw new Error(`Cedar policy set ${label}, ${defaultId}: empty @id`);
    }
    const policyId = annotated ?? defaultId;
    if (seen.has(policyId)) {
      throw new Error(`Cedar policy set ${label}: two policies with id '${policyId}'`);
    }
    seen.add(policyId);
    entries.push([Number(defaultId.slice('policy'.length)), policyId, text]);
  }
  entries.sort((a, b) => a[0] - b[0]);
  return Object.fromEntries(entries.map(([, policyId, text]) => [policyId, text]));
}

function validate(policies: Record<string, string>): string[] {
  const answer = cedarWasm().validate({
    schema: SCHEMA,
    policies: { staticPolicies: policies },
    validationSettings: { mode: 'strict' },
  });
  if (answer.type === 'failure') return answer.errors.map((e) => `validation failed: ${e.message}`);
  const messages = [...answer.validationErrors, ...answer.validationWarnings].map((v) => withHelp(v.error));
  for (const e of answer.otherWarnings) messages.push(withHelp(e));
  // The validator repeats a finding once per action the policy applies to.
  return [...new Set(messages)];
}

function describeErrors(errors: DetailedError[], text?: string): string {
  return errors
    .map((e) => {
      const location = e.sourceLocations?.[0];
      const where =
        text !== undefined && location !== undefined ? ` at ${lineColumn(text, location.start)}` : '';
      const label = location?.label ? ` (${location.label})` : '';
      return `${withHelp(e)}${label}${where}`;
    })
    .join('; ');
}

function withHelp(e: DetailedError): string {
  return e.help ? `${e.message} (${e.help})` : e.message;
}

/** Cedar reports byte offsets; the line and column are what a policy author can find. */
function lineColumn(text: string, byteOffset: number): string {
  const before = Buffer.from(text, 'utf8').subarray(0, byteOffset).toString('utf8');
  const lines = before.split('\n');
  return `line ${lines.length}, column ${(lines.at(-1)?.length ?? 0) + 1}`;
}
