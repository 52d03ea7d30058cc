// What the project's plugins (deploy-checks.ts, offline-package.ts) use of the Serverless
// Framework's instance, which ships no types of its own.
import type { APIGatewayClientConfig } from '@aws-sdk/client-api-gateway';
import type { LambdaClientConfig } from '@aws-sdk/client-lambda';

export interface Serverless {
  service: { service: string; custom: { xks: unknown } };
  classes: { Error: new (message: string) => Error };
  getProvider(name: 'aws'): {
    getStage(): string;
    /** The region and credentials of the deploy, for the AWS SDK's clients. */
    getAwsSdkV3Config(): Promise<LambdaClientConfig & APIGatewayClientConfig>;
  };
  /** The loaded plugins, the framework's own included. */
  pluginManager: { plugins: Array<{ compareWithLastLayer?: unknown }> };
}
