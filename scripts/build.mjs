#!/usr/bin/env node
// Builds everything `npm install` must leave ready: system packages (apt, when root), the eBPF
// object, the native shim and the TypeScript. Plain JavaScript because it runs before tsc exists.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { arch } from 'node:os';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const only = process.argv.slice(2); // e.g. `node scripts/build.mjs bpf native`
const want = (step) => only.length === 0 || only.includes(step);

// What each build or lab step needs, and the Debian package that provides it.
const systemNeeds = [
  { what: 'clang (compiles bpf/)', check: () => has('clang'), pkg: 'clang' },
  { what: 'llvm-strip (strips the eBPF object)', check: () => has('llvm-strip'), pkg: 'llvm' },
  { what: 'libbpf headers and library', check: () => existsSync('/usr/include/bpf/libbpf.h'), pkg: 'libbpf-dev' },
  { what: 'a C compiler (native/)', check: () => has('cc'), pkg: 'gcc' },
  { what: 'iproute2 (ip, the lab)', check: () => has('ip'), pkg: 'iproute2' },
  { what: 'nftables (the lab kube-proxy)', check: () => has('nft'), pkg: 'nftables' },
  { what: 'nsenter (util-linux, lab processes)', check: () => has('nsenter'), pkg: 'util-linux' },
  { what: 'curl (the demo\'s client)', check: () => has('curl'), pkg: 'curl' },
  { what: 'protoc (generates proto/gen)', check: () => has('protoc'), pkg: 'protobuf-compiler' },
  { what: 'openssl (the CA tests make CSRs with it)', check: () => has('openssl'), pkg: 'openssl' },
  { what: 'tcpdump (the ztunnel lab tests capture the fabric)', check: () => has('tcpdump'), pkg: 'tcpdump' },
];

function has(cmd) {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { stdio: 'inherit', cwd: root, ...opts });
  if (r.status !== 0) {
    console.error(`ambit build: '${cmd} ${args.join(' ')}' failed (exit ${r.status ?? r.signal})`);
    process.exit(1);
  }
}

function ensureSystemPackages() {
  const missing = systemNeeds.filter((n) => !n.check());
  if (missing.length === 0) return;
  const pkgs = [...new Set(missing.map((n) => n.pkg))];
  const cmd = `apt-get install -y --no-install-recommends ${pkgs.join(' ')}`;
  if (process.getuid?.() !== 0) {
    console.error('ambit build: missing system packages:');
    for (const n of missing) console.error(`  - ${n.what}: package ${n.pkg}`);
    console.error(`Install them as root, then run npm install again:\n  sudo apt-get update && sudo ${cmd}`);
    process.exit(1);
  }
  console.log(`ambit build: installing ${pkgs.join(', ')} with apt`);
  run('apt-get', ['update', '-q'], { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  run('apt-get', ['install', '-y', '-q', '--no-install-recommends', ...pkgs], {
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
  });
  const still = missing.filter((n) => !n.check());
  if (still.length) {
    console.error(`ambit build: still missing after apt: ${still.map((n) => n.what).join(', ')}`);
    process.exit(1);
  }
}

// Rebuild only when a source is newer than its output, so repeated `npm install` stays fast.
function stale(out, sources) {
  if (!existsSync(out)) return true;
  const t = statSync(out).mtimeMs;
  return sources.some((s) => statSync(join(root, s)).mtimeMs > t);
}

function buildBpf() {
  const out = join(root, 'build/bpf/redirect.bpf.o');
  const srcs = ['bpf/redirect.bpf.c', 'bpf/redirect.h'];
  if (!stale(out, srcs)) return;
  mkdirSync(dirname(out), { recursive: true });
  const multiarch = `/usr/include/${arch() === 'arm64' ? 'aarch64' : 'x86_64'}-linux-gnu`;
  run('clang', ['-O2', '-g', '-Wall', '-Werror', '-target', 'bpf', `-I${multiarch}`, '-Ibpf', '-c', 'bpf/redirect.bpf.c', '-o', out]);
  // Keep BTF (.BTF sections) but drop DWARF: libbpf needs the former, nobody needs the latter.
  run('llvm-strip', ['-g', out]);
}

function buildNative() {
  const out = join(root, 'build/native/libambit.so');
  const srcs = ['native/ambit.c', 'bpf/redirect.h'];
  if (!stale(out, srcs)) return;
  mkdirSync(dirname(out), { recursive: true });
  run('cc', ['-O2', '-g', '-Wall', '-Wextra', '-Werror', '-fPIC', '-shared', '-Ibpf', '-o', out, 'native/ambit.c', '-lbpf', '-lpthread']);
}

// TypeScript from our own .proto files (ts-proto), regenerated when a .proto is newer.
function buildProto() {
  const protos = [];
  const walk = (dir) => {
    for (const name of readdirSync(join(root, dir), { withFileTypes: true })) {
      const rel = join(dir, name.name);
      if (name.isDirectory() && rel !== join('proto', 'gen')) walk(rel);
      else if (name.name.endsWith('.proto')) protos.push(rel);
    }
  };
  walk('proto');
  const stamp = join(root, 'proto/gen/.stamp');
  if (!stale(stamp, protos)) return;
  rmSync(join(root, 'proto/gen'), { recursive: true, force: true });
  mkdirSync(join(root, 'proto/gen'), { recursive: true });
  run('protoc', [
    '-I', 'proto',
    `--plugin=protoc-gen-ts_proto=${join(root, 'node_modules/.bin/protoc-gen-ts_proto')}`,
    '--ts_proto_out=proto/gen',
    '--ts_proto_opt=outputServices=grpc-js,esModuleInterop=true,importSuffix=.js,forceLong=number,env=node,useOptionals=none',
    ...protos.map((p) => p.slice('proto/'.length)),
  ]);
  writeFileSync(stamp, '');
}

function buildTs() {
  run(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', join(root, 'tsconfig.json')]);
}

if (process.platform !== 'linux') {
  console.error('ambit build: Ambit runs on Linux only (eBPF, network namespaces).');
  process.exit(1);
}
if (want('deps')) ensureSystemPackages();
if (want('bpf')) buildBpf();
if (want('native')) buildNative();
if (want('proto')) buildProto();
if (want('ts')) buildTs();
try {
  execFileSync('chmod', ['+x', join(root, 'bin/ambit')]);
} catch {
  // bin/ambit is committed executable; chmod is only a repair for checkouts that lost the bit.
}
