// GetHealthStatus, as CreateCustomKeyStore sends it (spec: GetHealthStatus): a 200 with the
// spec's body, and key managers KMS can use.
import { kmsOutcome, withTiming } from './kms.ts';
import { describeNetError, type HttpReply, type NetError, networkScenario } from './network.ts';
import { contentType, isJsonContentType, isObject, replyScenario, successJson } from './replies.ts';
import { type Check, ms } from './report.ts';

const FLEET_STATES = ['ACTIVE', 'DEGRADED', 'UNAVAILABLE'];

export function healthSchemaProblems(body: Record<string, unknown>): string[] {
  const problems: string[] = [];
  const size = body.xksProxyFleetSize;
  if (typeof size !== 'number' || !Number.isInteger(size) || size < 1) {
    problems.push('xksProxyFleetSize is not an integer greater than zero');
  }
  for (const field of ['xksProxyVendor', 'xksProxyModel', 'ekmVendor']) {
    if (typeof body[field] !== 'string') problems.push(`${field} is not a string`);
  }
  const fleet = body.ekmFleetDetails;
  if (!Array.isArray(fleet)) problems.push('ekmFleetDetails is not an array');
  else {
    if (fleet.length < 1 || fleet.length > 10)
      problems.push(`ekmFleetDetails has ${fleet.length} entries, not 1-10`);
    fleet.forEach((entry, i) => {
      if (!isObject(entry)) problems.push(`ekmFleetDetails[${i}] is not an object`);
      else {
        if (typeof entry.id !== 'string') problems.push(`ekmFleetDetails[${i}].id is not a string`);
        if (typeof entry.model !== 'string') problems.push(`ekmFleetDetails[${i}].model is not a string`);
        if (!FLEET_STATES.includes(entry.healthStatus as string)) {
          problems.push(`ekmFleetDetails[${i}].healthStatus is not ACTIVE, DEGRADED or UNAVAILABLE`);
        }
      }
    });
  }
  return problems;
}

export function healthChecks(health: HttpReply | NetError): Check[] {
  const statusTitle = 'GetHealthStatus answers 200 (signed as KMS signs)';
  const schemaTitle = 'GetHealthStatus body matches the spec';
  const fleetTitle = 'External key managers are healthy';
  if (!health.ok) {
    return [
      {
        id: 'health.status',
        title: statusTitle,
        status: 'fail',
        detail: describeNetError(health),
        ...kmsOutcome(networkScenario(health), 'customKeyStore'),
      },
    ];
  }
  if (health.status !== 200) {
    const { scenario, what } = replyScenario(health);
    return [
      {
        id: 'health.status',
        title: statusTitle,
        status: 'fail',
        detail: `${what} (${ms(health.ms)})`,
        ...kmsOutcome(scenario, 'customKeyStore'),
      },
    ];
  }
  const checks: Check[] = [];
  const jsonType = isJsonContentType(health);
  checks.push(
    withTiming(
      {
        id: 'health.status',
        title: statusTitle,
        status: jsonType ? 'pass' : 'warn',
        detail: `HTTP 200 in ${ms(health.ms)} (TCP + TLS + request)${jsonType ? '' : `; Content-Type is '${contentType(health)}', not application/json`}`,
      },
      health,
      'customKeyStore',
    ),
  );
  const parsed = successJson(health);
  if ('problem' in parsed) {
    checks.push({
      id: 'health.schema',
      title: schemaTitle,
      status: 'fail',
      detail: parsed.problem,
      ...kmsOutcome('malformed', 'customKeyStore'),
    });
    return checks;
  }
  const problems = healthSchemaProblems(parsed.body);
  if (problems.length > 0) {
    checks.push({
      id: 'health.schema',
      title: schemaTitle,
      status: 'fail',
      detail: problems.join('; '),
      ...kmsOutcome('malformed', 'customKeyStore'),
    });
    return checks;
  }
  const body = parsed.body as {
    xksProxyFleetSize: number;
    xksProxyVendor: string;
    xksProxyModel: string;
    ekmVendor: string;
    ekmFleetDetails: { id: string; model: string; healthStatus: string }[];
  };
  checks.push({
    id: 'health.schema',
    title: schemaTitle,
    status: 'pass',
    detail: `${body.xksProxyVendor} / ${body.xksProxyModel}, fleet of ${body.xksProxyFleetSize}; key manager vendor ${body.ekmVendor}`,
  });
  const fleet = body.ekmFleetDetails.map((e) => `${e.id} (${e.model}): ${e.healthStatus}`).join(', ');
  const states = body.ekmFleetDetails.map((e) => e.healthStatus);
  if (states.every((s) => s === 'UNAVAILABLE')) {
    checks.push({
      id: 'health.fleet',
      title: fleetTitle,
      status: 'fail',
      detail: fleet,
      ...kmsOutcome('allUnavailable', 'customKeyStore'),
    });
  } else if (states.some((s) => s !== 'ACTIVE')) {
    checks.push({
      id: 'health.fleet',
      title: fleetTitle,
      status: 'warn',
      detail: `${fleet}: KMS still connects, but capacity or redundancy is reduced`,
    });
  } else {
    checks.push({ id: 'health.fleet', title: fleetTitle, status: 'pass', detail: fleet });
  }
  return checks;
}
