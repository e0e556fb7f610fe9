// The resource map: every resource instance of a twin's terraform state as a node, each
// instance's `dependencies` as edges from what it depends on, laid out in layers (a resource
// sits below everything it depends on), coloured by type, drifted ones marked. Plain SVG drawn
// here: no library.

import { fill, h } from './dom.js';

const SVG = 'http://www.w3.org/2000/svg';
const NODE_W = 172;
const NODE_H = 46;
const GAP_X = 20;
const GAP_Y = 44;
const PAD = 12;
const COLOURS = 8;
const LABEL_CHARS = 22;

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'class') el.setAttribute('class', value);
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** terraform's address of an instance: `type.name`, `type.name[0]`, `type.name["key"]`. */
export function instanceAddress(resource, instance) {
  const base = `${resource.module ? `${resource.module}.` : ''}${resource.type}.${resource.name}`;
  const key = instance?.index_key;
  if (key === undefined || key === null) return base;
  return typeof key === 'number' ? `${base}[${key}]` : `${base}[${JSON.stringify(String(key))}]`;
}

/** The nodes and edges of a (masked) state: managed resources only. */
export function graphOf(state) {
  const nodes = [];
  for (const resource of state?.resources ?? []) {
    if (resource.mode === 'data') continue;
    const base = `${resource.module ? `${resource.module}.` : ''}${resource.type}.${resource.name}`;
    for (const instance of resource.instances?.length ? resource.instances : [{}]) {
      const kind = resource.type === 'sandbox_resource' && typeof instance.attributes?.kind === 'string'
        ? instance.attributes.kind : resource.type;
      nodes.push({
        address: instanceAddress(resource, instance),
        base,
        type: resource.type,
        kind,
        id: typeof instance.attributes?.id === 'string' ? instance.attributes.id : null,
        dependencies: Array.isArray(instance.dependencies) ? instance.dependencies : [],
      });
    }
  }
  const byBase = new Map();
  for (const node of nodes) {
    if (!byBase.has(node.base)) byBase.set(node.base, []);
    byBase.get(node.base).push(node);
  }
  const byAddress = new Map(nodes.map((node) => [node.address, node]));
  const edges = [];
  for (const node of nodes) {
    const seen = new Set();
    for (const dependency of node.dependencies) {
      const targets = byAddress.has(dependency) ? [byAddress.get(dependency)] : byBase.get(dependency) ?? [];
      for (const from of targets) {
        if (from === node || seen.has(from.address)) continue;
        seen.add(from.address);
        edges.push({ from: from.address, to: node.address });
      }
    }
  }
  return { nodes, edges };
}

/** Layer of each node: one more than the deepest thing it depends on (cycles are cut). */
function layers(nodes, edges) {
  const parents = new Map(nodes.map((node) => [node.address, []]));
  for (const edge of edges) parents.get(edge.to)?.push(edge.from);
  const depth = new Map();
  const visiting = new Set();
  const walk = (address) => {
    if (depth.has(address)) return depth.get(address);
    if (visiting.has(address)) return 0;
    visiting.add(address);
    let d = 0;
    for (const parent of parents.get(address) ?? []) d = Math.max(d, walk(parent) + 1);
    visiting.delete(address);
    depth.set(address, d);
    return d;
  };
  for (const node of nodes) walk(node.address);
  return { depth, parents };
}

/**
 * Draws the map into `container`. `drifted` is a Set of addresses found drifted; `onSelect`
 * gets a node when it is focused or clicked.
 */
export function drawResourceMap(container, state, { drifted = new Set(), onSelect } = {}) {
  const { nodes, edges } = graphOf(state);
  if (!nodes.length) {
    fill(container, h('p', { class: 'muted' }, 'No resources in the state yet: the map fills in after a deploy.'));
    container.dataset.nodes = '0';
    return;
  }
  const width = Math.max(NODE_W + 2 * PAD, container.clientWidth || 720);
  const perRow = Math.max(1, Math.floor((width - 2 * PAD + GAP_X) / (NODE_W + GAP_X)));
  const { depth, parents } = layers(nodes, edges);
  const maxDepth = Math.max(...depth.values());

  // Types in a stable order get the colours.
  const kinds = [...new Set(nodes.map((node) => node.kind))].sort();
  const colour = new Map(kinds.map((kind, index) => [kind, index % COLOURS]));

  // Place layer by layer; within a layer, order by where the parents sit (fewer crossings).
  const position = new Map();
  let y = PAD;
  for (let d = 0; d <= maxDepth; d += 1) {
    const layer = nodes.filter((node) => depth.get(node.address) === d);
    const weight = (node) => {
      const xs = (parents.get(node.address) ?? []).map((p) => position.get(p)?.x).filter(Number.isFinite);
      return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : Infinity;
    };
    layer.sort((a, b) => weight(a) - weight(b) || a.address.localeCompare(b.address));
    for (let start = 0; start < layer.length; start += perRow) {
      const row = layer.slice(start, start + perRow);
      const rowWidth = row.length * NODE_W + (row.length - 1) * GAP_X;
      let x = Math.max(PAD, (width - rowWidth) / 2);
      for (const node of row) {
        position.set(node.address, { x, y });
        x += NODE_W + GAP_X;
      }
      y += NODE_H + GAP_Y;
    }
  }
  const height = y - GAP_Y + PAD;

  const edgeEls = edges.map((edge) => {
    const from = position.get(edge.from);
    const to = position.get(edge.to);
    const x1 = from.x + NODE_W / 2;
    const y1 = from.y + NODE_H;
    const x2 = to.x + NODE_W / 2;
    const y2 = to.y;
    const bend = Math.max(16, (y2 - y1) / 2);
    const d = y2 > y1
      ? `M${x1},${y1} C${x1},${y1 + bend} ${x2},${y2 - bend} ${x2},${y2}`
      : `M${x1},${y1} C${x1},${y1 + 40} ${x2},${y2 - 40} ${x2},${y2}`;
    return s('path', { class: 'map-edge', d, 'marker-end': 'url(#map-arrow)', dataset: { from: edge.from, to: edge.to } });
  });

  const nodeEls = nodes.map((node) => {
    const { x, y: top } = position.get(node.address);
    const isDrifted = drifted.has(node.address) || drifted.has(node.base);
    const dependsOn = edges.filter((edge) => edge.to === node.address).map((edge) => edge.from);
    const label = `${node.address}, ${node.kind}${isDrifted ? ', drifted' : ''}${dependsOn.length ? `, depends on ${dependsOn.join(', ')}` : ''}`;
    const select = () => onSelect?.({ ...node, drifted: isDrifted, dependsOn });
    const name = node.address.startsWith(`${node.type}.`) ? node.address.slice(node.type.length + 1) : node.address;
    return s(
      'g',
      {
        class: `map-node map-colour-${colour.get(node.kind)}${isDrifted ? ' is-drifted' : ''}`,
        transform: `translate(${x},${top})`,
        tabindex: 0,
        role: 'img',
        'aria-label': label,
        dataset: { address: node.address, kind: node.kind, drifted: isDrifted ? 'true' : 'false' },
        onfocus: select,
        onclick: select,
      },
      s('title', {}, label),
      s('rect', { class: 'map-box', width: NODE_W, height: NODE_H, rx: 8 }),
      s('text', { class: 'map-name', x: 10, y: 19 }, shorten(name)),
      s('text', { class: 'map-kind', x: 10, y: 36 }, shorten(node.kind, LABEL_CHARS - (isDrifted ? 8 : 0))),
      isDrifted && s('text', { class: 'map-drift', x: NODE_W - 10, y: 36, 'text-anchor': 'end' }, '⚠ drifted'),
    );
  });

  const svg = s(
    'svg',
    {
      class: 'resource-map',
      viewBox: `0 0 ${width} ${height}`,
      width,
      height,
      role: 'group',
      'aria-label': `Resource map: ${nodes.length} resources, ${edges.length} dependencies`,
    },
    s('defs', {}, s('marker', { id: 'map-arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' },
      s('path', { class: 'map-arrow', d: 'M0,0 L10,5 L0,10 z' }))),
    s('g', { class: 'map-edges' }, edgeEls),
    s('g', { class: 'map-nodes' }, nodeEls),
  );
  const legend = h(
    'ul',
    { class: 'map-legend', 'aria-label': 'Resource types' },
    kinds.map((kind) => h('li', { class: `map-colour-${colour.get(kind)}` }, h('span', { class: 'swatch', 'aria-hidden': 'true' }), kind)),
    drifted.size ? h('li', { class: 'legend-drifted' }, h('span', { class: 'swatch', 'aria-hidden': 'true' }), 'drifted') : null,
  );
  container.dataset.nodes = String(nodes.length);
  container.dataset.edges = String(edges.length);
  fill(container, legend, h('div', { class: 'map-scroll' }, svg));
}

function shorten(text, max = LABEL_CHARS) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}
