// A small Serverless plugin for `npm run package` (offline, no AWS credentials): the framework's
// layer compiler asks CloudFormation whether the deployed layer is unchanged (DescribeStacks),
// which needs credentials and a network. With XKS_PACKAGE_OFFLINE=1 that question is skipped: the
// layer is then simply uploaded again on the next deploy. Without the variable it does nothing.
import type { Serverless } from './serverless.ts';

export default class OfflinePackage {
  readonly hooks: Record<string, () => void> = {};

  constructor(serverless: Pick<Serverless, 'pluginManager'>) {
    if (process.env.XKS_PACKAGE_OFFLINE !== '1') return;
    this.hooks['before:package:compileLayers'] = () => {
      for (const plugin of serverless.pluginManager.plugins) {
        if (typeof plugin.compareWithLastLayer === 'function') plugin.compareWithLastLayer = async () => {};
      }
    };
  }
}
