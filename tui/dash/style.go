package dash

import (
	"image/color"

	"charm.land/lipgloss/v2"
)

// theme is how the dashboard looks. Status words are upper case in every
// theme, so they read the same with colour turned off (NO_COLOR).
type theme struct {
	brand     lipgloss.Style
	title     lipgloss.Style
	colHeader lipgloss.Style
	selected  lipgloss.Style
	ok        lipgloss.Style
	bad       lipgloss.Style
	warn      lipgloss.Style
	dim       lipgloss.Style
	key       lipgloss.Style
	status    map[string]lipgloss.Style
}

func newTheme(noColor bool) theme {
	plain := lipgloss.NewStyle()
	if noColor {
		// No colour at all; what stays are attributes a monochrome
		// terminal shows, and the words themselves.
		bold := plain.Bold(true)
		return theme{
			brand: bold, title: bold, colHeader: bold, selected: plain.Reverse(true),
			ok: plain, bad: bold, warn: plain, dim: plain, key: bold,
			status: map[string]lipgloss.Style{"FAILED": bold, "OFFLINE": bold, "ABANDONED": bold},
		}
	}
	fg := func(c color.Color) lipgloss.Style { return plain.Foreground(c) }
	return theme{
		brand:     fg(lipgloss.Cyan).Bold(true),
		title:     fg(lipgloss.BrightWhite).Bold(true),
		colHeader: fg(lipgloss.BrightBlack).Bold(true),
		selected:  plain.Foreground(lipgloss.Black).Background(lipgloss.Cyan),
		ok:        fg(lipgloss.Green),
		bad:       fg(lipgloss.Red).Bold(true),
		warn:      fg(lipgloss.Yellow),
		dim:       fg(lipgloss.BrightBlack),
		key:       fg(lipgloss.Cyan).Bold(true),
		status: map[string]lipgloss.Style{
			"PENDING":   fg(lipgloss.Yellow),
			"ASSIGNED":  fg(lipgloss.Blue),
			"RUNNING":   fg(lipgloss.BrightBlue).Bold(true),
			"SUCCEEDED": fg(lipgloss.Green),
			"FAILED":    fg(lipgloss.Red).Bold(true),
			"CANCELLED": fg(lipgloss.Magenta),
			"IDLE":      fg(lipgloss.Green),
			"BUSY":      fg(lipgloss.BrightBlue).Bold(true),
			"DRAINING":  fg(lipgloss.Yellow),
			"OFFLINE":   fg(lipgloss.Red).Bold(true),
			// Work item statuses; FAILED is shared with jobs.
			"NEW":         fg(lipgloss.Yellow),
			"IN_PROGRESS": fg(lipgloss.BrightBlue).Bold(true),
			"SUCCESSFUL":  fg(lipgloss.Green),
			"ABANDONED":   fg(lipgloss.Red).Bold(true),
			"RETRIED":     fg(lipgloss.Magenta),
			"DELETED":     fg(lipgloss.BrightBlack),
			"ERROR":       fg(lipgloss.Red),
			"WARN":        fg(lipgloss.Yellow),
			"DEBUG":       fg(lipgloss.BrightBlack),
		},
	}
}

// statusWord styles a status word by what it means.
func (t theme) statusWord(s string) string {
	if st, ok := t.status[s]; ok {
		return st.Render(s)
	}
	return s
}
