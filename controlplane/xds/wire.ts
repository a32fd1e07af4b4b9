// The wire side of DeltaAggregatedResources. Responses are assembled from resources encoded once
// per change (a `Resource` message each), so pushing the same resource to a hundred clients costs
// a hundred copies, not a hundred encodings. Requests are size-checked before they are decoded.

import { Buffer } from 'node:buffer';
import {
  DeltaDiscoveryRequest,
  type DeltaDiscoveryResponse,
} from '../../proto/gen/envoy/service/discovery/v3/discovery.js';
import { AggregatedDiscoveryServiceService } from '../../proto/gen/envoy/service/discovery/v3/ads.js';
import { DeltaDiscoveryResponse as DeltaDiscoveryResponseCodec } from '../../proto/gen/envoy/service/discovery/v3/discovery.js';

/** A response whose resources are already encoded `envoy.service.discovery.v3.Resource` messages. */
export interface PreparedResponse {
  typeUrl: string;
  nonce: string;
  systemVersionInfo: string;
  resources: readonly Buffer[];
  removedResources: readonly string[];
}

/**
 * xDS requests may carry a version for every resource a client holds (tens of thousands on a big
 * cluster); anything beyond this is not a client of ours.
 */
export const MAX_XDS_REQUEST_BYTES = 16 << 20;

/**
 * A request as the transport hands it over: its bytes, not yet decoded. The connection decodes it
 * only once the stream's token is accepted, so an unauthenticated peer costs no decoding, and it
 * answers a message that is too large or not a request with a precise status (a throwing
 * deserializer would get grpc-js's bare INTERNAL).
 */
export interface RawRequest {
  /** Null when the message is over the limit (dropped unread). */
  bytes: Buffer | null;
  size: number;
}

export type DecodedRequest = { ok: true; request: DeltaDiscoveryRequest } | { ok: false; tooLarge: boolean; message: string };

export function decodeRequest(raw: RawRequest): DecodedRequest {
  if (raw.bytes === null) {
    return { ok: false, tooLarge: true, message: `the request is ${raw.size} bytes; requests are limited to ${MAX_XDS_REQUEST_BYTES} bytes` };
  }
  try {
    return { ok: true, request: DeltaDiscoveryRequest.decode(raw.bytes) };
  } catch (err) {
    return { ok: false, tooLarge: false, message: `the request is not a DeltaDiscoveryRequest: ${err instanceof Error ? err.message : String(err)}` };
  }
}

function varintSize(n: number): number {
  let size = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    size++;
  }
  return size;
}

function writeVarint(buf: Buffer, offset: number, n: number): number {
  while (n >= 0x80) {
    buf[offset++] = (n % 128) | 0x80;
    n = Math.floor(n / 128);
  }
  buf[offset++] = n;
  return offset;
}

// Field tags of DeltaDiscoveryResponse (wire type 2, length-delimited).
const TAG_SYSTEM_VERSION_INFO = (1 << 3) | 2;
const TAG_RESOURCES = (2 << 3) | 2;
const TAG_TYPE_URL = (4 << 3) | 2;
const TAG_NONCE = (5 << 3) | 2;
const TAG_REMOVED_RESOURCES = (6 << 3) | 2;

/** Encodes a prepared response as DeltaDiscoveryResponse bytes (protobuf field order does not matter to decoders). */
export function encodePreparedResponse(r: PreparedResponse): Buffer {
  const strings: [number, Buffer][] = [];
  const addString = (tag: number, s: string): void => {
    if (s !== '') strings.push([tag, Buffer.from(s, 'utf8')]);
  };
  addString(TAG_SYSTEM_VERSION_INFO, r.systemVersionInfo);
  addString(TAG_TYPE_URL, r.typeUrl);
  addString(TAG_NONCE, r.nonce);
  for (const name of r.removedResources) strings.push([TAG_REMOVED_RESOURCES, Buffer.from(name, 'utf8')]);
  let size = 0;
  for (const [, b] of strings) size += 1 + varintSize(b.length) + b.length;
  for (const b of r.resources) size += 1 + varintSize(b.length) + b.length;
  const out = Buffer.allocUnsafe(size);
  let offset = 0;
  for (const b of r.resources) {
    out[offset++] = TAG_RESOURCES;
    offset = writeVarint(out, offset, b.length);
    offset += b.copy(out, offset);
  }
  for (const [tag, b] of strings) {
    out[offset++] = tag;
    offset = writeVarint(out, offset, b.length);
    offset += b.copy(out, offset);
  }
  return out;
}

/** Decodes response bytes (for clients and tests). */
export function decodeResponse(bytes: Uint8Array): DeltaDiscoveryResponse {
  return DeltaDiscoveryResponseCodec.decode(bytes);
}

const base = AggregatedDiscoveryServiceService.deltaAggregatedResources;

/**
 * The ADS service definition the server registers: the generated one, with responses written from
 * prepared parts and oversized requests refused before decoding.
 */
export const DeltaAdsServiceDefinition = {
  deltaAggregatedResources: {
    path: base.path,
    requestStream: true as const,
    responseStream: true as const,
    originalName: 'DeltaAggregatedResources',
    requestSerialize: base.requestSerialize,
    // Over the limit, the bytes are dropped at once; the connection refuses the stream.
    requestDeserialize: (bytes: Buffer): RawRequest => ({ bytes: bytes.length > MAX_XDS_REQUEST_BYTES ? null : bytes, size: bytes.length }),
    responseSerialize: (r: PreparedResponse): Buffer => encodePreparedResponse(r),
    responseDeserialize: (bytes: Buffer): PreparedResponse => {
      const d = DeltaDiscoveryResponseCodec.decode(bytes);
      return {
        typeUrl: d.typeUrl,
        nonce: d.nonce,
        systemVersionInfo: d.systemVersionInfo,
        removedResources: d.removedResources,
        resources: [],
      };
    },
  },
};
