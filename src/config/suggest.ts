/** "Did you mean …?" for misspelt keys, service names and pipe names. */
import { distance } from 'fastest-levenshtein'

/**
 * The candidate closest to `word`, when close enough to be a typo: a
 * different case, or at most two edits (a third of the word for long ones).
 * A transposition counts as two edits, so `jtw` still finds `jwt`.
 */
export function closestName (word: string, candidates: Iterable<string>): string | undefined {
  const lower = word.toLowerCase()
  let best: string | undefined
  let bestDistance = Infinity
  for (const candidate of candidates) {
    const d = distance(lower, candidate.toLowerCase())
    if (d < bestDistance) {
      best = candidate
      bestDistance = d
    }
  }
  const limit = Math.max(2, Math.floor(word.length / 3))
  return bestDistance <= limit && bestDistance < word.length ? best : undefined
}

/** ` (did you mean "x"?)`, or nothing. */
export function didYouMean (word: string, candidates: Iterable<string>): string {
  const guess = closestName(word, candidates)
  return guess === undefined ? '' : ` (did you mean "${guess}"?)`
}
