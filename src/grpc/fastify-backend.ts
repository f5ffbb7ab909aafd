/**
 * InferenceBackend over today's modules, called the way src/http/v2.ts calls them: modelFor for the
 * served model, the Admission that REST's inference routes take their slots from, the access check
 * REST's hook runs, screenQueries, ensemble.classify and checkProbabilities. The Fastify instance is
 * needed only for screenQueries (its decorator) and its logger.
 *
 * Admission and detection take Fastify's request and reply; a call stands in for them through the
 * two small shims below, which use exactly what those modules read. This file, and these shims with
 * it, is what gets rewritten once both APIs share one inference step.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { UnavailableError } from '../errors.js';
import type { AccessCheck } from '../http/access.js';
import type { Admission } from '../http/admission.js';
import { checkProbabilities } from '../http/probabilities.js';
import { OUTPUT_NAME } from '../http/v2-codec.js';
import { modelFor } from '../http/v2.js';
import type { ModelState } from '../model-state.js';
import { SERVICE_NAME } from '../version.js';
import type { Caller, InferenceBackend, ServedModel } from './backend.js';

export interface BackendParts {
  readonly state: ModelState;
  readonly maxImagesPerRequest: number;
  /** The REST server: its screenQueries decorator and its logger. */
  readonly server: FastifyInstance;
  /** The same instances REST uses, so that limits and buckets count both APIs together. */
  readonly admission: Admission;
  readonly access: AccessCheck | null;
}

/** Admission.enter holds its slot until `reply.raw` emits close: here, until the call ends. */
function replyOf(caller: Caller): FastifyReply {
  const raw = { once: (_event: 'close', release: () => void) => caller.ended.addEventListener('abort', release, { once: true }) };
  return { raw } as unknown as FastifyReply;
}

/** screenQueries reads the client's identity (headers, address) and logs; in log mode it sets detectionHeader. */
function requestOf(caller: Caller, server: FastifyInstance): FastifyRequest {
  return { headers: caller.headers, ip: caller.address, log: server.log, detectionHeader: null } as unknown as FastifyRequest;
}

export function fastifyBackend({ state, maxImagesPerRequest, server, admission, access }: BackendParts): InferenceBackend {
  return {
    ready() {
      try {
        state.serving();
        return true;
      } catch (err) {
        if (err instanceof UnavailableError) return false;
        throw err;
      }
    },

    admit(caller) {
      access?.(caller.headers, caller.address);
    },

    model(name, version): ServedModel {
      const { manifest } = modelFor(state, { name, version: version === '' ? undefined : version });
      const { input, output, labels } = manifest;
      return {
        spec: { model: { name: manifest.name, version: manifest.version }, input, classes: output.classes, maxImages: maxImagesPerRequest },
        labels,
        metadata: {
          name: manifest.name,
          versions: [manifest.version],
          platform: SERVICE_NAME,
          inputs: [{ name: input.name, datatype: 'FP32', shape: [-1, ...input.shape] }],
          outputs: [{ name: OUTPUT_NAME, datatype: 'FP32', shape: [-1, output.classes] }],
        },
      };
    },

    async infer(batch, caller) {
      // A draining server takes no new inference (REST's closing Fastify answers 503 the same way).
      const ensemble = state.serving();
      // A call that has already ended would never release a slot taken now.
      if (caller.ended.aborted) throw new UnavailableError('cancelled', 'the call ended before inference started');
      admission.enter(replyOf(caller));
      const req = requestOf(caller, server);
      server.screenQueries(req, ensemble.manifest.input, batch.data, batch.n);
      const probabilities = checkProbabilities(await ensemble.classify(batch.data, batch.n));
      return { probabilities, detection: req.detectionHeader };
    },
  };
}
