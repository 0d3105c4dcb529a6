/** The Prometheus text format (0.0.4), parsed as far as the tests need. */
export interface Sample { name: string, labels: Record<string, string>, value: number }
export interface Exposition { types: Map<string, string>, samples: Sample[] }

export function parse (text: string): Exposition {
  const types = new Map<string, string>()
  const samples: Sample[] = []
  for (const line of text.split('\n')) {
    if (line === '') continue
    const type = /^# TYPE (\S+) (\S+)$/.exec(line)
    if (type !== null) { types.set(type[1], type[2]); continue }
    if (line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (m === null) throw new Error(`unparsable line: ${line}`)
    const labels: Record<string, string> = {}
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2]
    samples.push({ name: m[1], labels, value: Number(m[3]) })
  }
  return { types, samples }
}

export function find (exp: Exposition, name: string, labels: Record<string, string> = {}): Sample[] {
  return exp.samples.filter(s => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
}

/** The one sample matching; undefined when none does, an error when several do. */
export function value (exp: Exposition, name: string, labels: Record<string, string> = {}): number | undefined {
  const found = find(exp, name, labels)
  if (found.length > 1) throw new Error(`${name} ${JSON.stringify(labels)} matches ${found.length} samples`)
  return found[0]?.value
}
