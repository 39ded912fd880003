// A user's colour from their hue (0–359, as ClientInfo carries it). Yellows, greens and
// cyans are perceptually much lighter than blues at the same HSL lightness, so they are
// darkened to keep white name labels readable on every hue.

/** The CSS colour for carets, name labels and user dots. */
export function userColor(hue) {
  const h = ((Math.round(Number(hue) || 0) % 360) + 360) % 360;
  const lightness = h >= 40 && h <= 200 ? 32 : 44;
  return `hsl(${h} 75% ${lightness}%)`;
}

/** The translucent CSS colour for a user's selection. */
export function selectionColor(hue) {
  const h = ((Math.round(Number(hue) || 0) % 360) + 360) % 360;
  return `hsl(${h} 90% 70% / 0.3)`;
}
