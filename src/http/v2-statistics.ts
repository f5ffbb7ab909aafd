/**
 * The statistics extension (Triton's `GET /v2/models[/{name}]/stats`), read from the Prometheus
 * metrics the service already keeps, so that the two never disagree. The model serves /classify
 * and v2 infer alike, so the figures cover both. What the metrics do not hold is reported as 0
 * (last_inference, compute_input, compute_output, cache).
 */
import type { Manifest } from '../ensemble/manifest.js';
import type { Metrics } from '../metrics.js';

/** Route patterns of inference requests, as the request counter labels them. */
const INFER_ROUTES = new Set(['/classify', '/v2/models/:name/infer', '/v2/models/:name/versions/:version/infer']);

interface Sample { value: number; labels: Record<string, string | number>; metricName?: string }

async function samples(metrics: Metrics | null, name: string): Promise<Sample[]> {
  const metric = metrics?.registry.getSingleMetric(name);
  if (!metric) return [];
  return (await metric.get()).values as Sample[];
}

const total = (values: Sample[], keep: (s: Sample) => boolean = () => true) =>
  values.filter(keep).reduce((sum, s) => sum + s.value, 0);

/** `{ count, ns }` of a histogram in seconds. */
async function histogram(metrics: Metrics | null, name: string, keep: (s: Sample) => boolean = () => true) {
  const values = (await samples(metrics, name)).filter(keep);
  return {
    count: total(values, (s) => s.metricName === `${name}_count`),
    ns: Math.round(total(values, (s) => s.metricName === `${name}_sum`) * 1e9),
  };
}

const ZERO = { count: 0, ns: 0 };

export async function inferenceStatistics(metrics: Metrics | null, manifest: Manifest) {
  const requests = await samples(metrics, 'redserve_http_requests_total');
  const isInfer = (s: Sample) => INFER_ROUTES.has(String(s.labels.route));
  const answered = await histogram(metrics, 'redserve_http_request_duration_seconds', isInfer);
  const compute = await histogram(metrics, 'redserve_inference_compute_seconds');
  const images = await samples(metrics, 'redserve_inference_batch_images');
  return {
    name: manifest.name,
    version: manifest.version,
    last_inference: 0,
    // Images run through members (under mean sampling, once per member) and member runs (batches).
    inference_count: total(images, (s) => s.metricName === 'redserve_inference_batch_images_sum'),
    execution_count: compute.count,
    inference_stats: {
      // Answered inference requests; ns is the time of all of them, successes and failures together.
      success: { count: total(requests, (s) => isInfer(s) && String(s.labels.status) === '200'), ns: answered.ns },
      fail: { count: total(requests, (s) => isInfer(s) && String(s.labels.status) !== '200'), ns: 0 },
      queue: await histogram(metrics, 'redserve_inference_queue_seconds'),
      compute_input: ZERO,
      compute_infer: compute,
      compute_output: ZERO,
      cache_hit: ZERO,
      cache_miss: ZERO,
    },
    batch_stats: [],
  };
}
