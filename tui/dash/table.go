package dash

import (
	"strings"

	"github.com/charmbracelet/x/ansi"
)

// column is one column of a list view. Columns with a lower prio number
// stay when the terminal is narrow; the rest drop out from the highest.
type column struct {
	title string
	min   int // width it needs to be worth showing
	max   int // width it never grows beyond
	prio  int
	right bool // numbers align right
	tail  bool // truncate from the left: ids differ at their end
}

// gap is the space between two columns.
const gap = 2

// layout picks the columns that fit width and how wide each is, in the
// columns' own order: widths[i] is 0 for a dropped column.
func layout(cols []column, width int) []int {
	widths := make([]int, len(cols))
	byPrio := make([]int, len(cols))
	for i := range cols {
		byPrio[i] = i
	}
	// Stable by priority, then by position.
	for i := 1; i < len(byPrio); i++ {
		for j := i; j > 0 && cols[byPrio[j]].prio < cols[byPrio[j-1]].prio; j-- {
			byPrio[j], byPrio[j-1] = byPrio[j-1], byPrio[j]
		}
	}
	used := 0
	for _, i := range byPrio {
		need := cols[i].min
		if used > 0 {
			need += gap
		}
		if used+need > width {
			break
		}
		widths[i] = cols[i].min
		used += need
	}
	// Spread what is left over the kept columns, most important first.
	for _, i := range byPrio {
		if widths[i] == 0 {
			continue
		}
		grow := min(cols[i].max-widths[i], width-used)
		if grow > 0 {
			widths[i] += grow
			used += grow
		}
	}
	return widths
}

// fit pads or truncates s to exactly w cells.
func fit(s string, w int, right, tail bool) string {
	n := ansi.StringWidth(s)
	switch {
	case n > w:
		if tail {
			return "…" + ansi.TruncateLeft(s, n-w+1, "")
		}
		return ansi.Truncate(s, w, "…")
	case right:
		return strings.Repeat(" ", w-n) + s
	default:
		return s + strings.Repeat(" ", w-n)
	}
}

// renderRow joins cells into one line of exactly width cells.
func renderRow(cols []column, widths []int, cells []string, width int) string {
	var b strings.Builder
	first := true
	for i, w := range widths {
		if w == 0 {
			continue
		}
		if !first {
			b.WriteString("  ")
		}
		first = false
		b.WriteString(fit(cells[i], w, cols[i].right, cols[i].tail))
	}
	return fit(b.String(), width, false, false)
}
