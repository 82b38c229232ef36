// Package browser is the browser.* step family: it drives the robot's own
// Chromium through the DevTools protocol (chromedp), headless by default,
// never a browser downloaded for the purpose.
//
// Each job gets at most one browser, started by its first browser step
// and kept as the job's "browser" resource, so later steps see the page
// earlier steps left. It is killed with a fresh profile directory removed
// when the job ends for any reason (the robot closes the job's Env), when
// a step is cancelled, or on browser.close.
package browser

import (
	"time"

	"github.com/casarerpa/casare/agent/step"
)

// Config is what the robot's configuration says about its browser.
type Config struct {
	// Chromium is the browser binary, as Find returned it. Empty means the
	// first of chromium, chromium-browser, google-chrome and
	// google-chrome-stable on PATH.
	Chromium string
	// Headless runs the browser without a window. Robots set it true
	// unless told to show the browser; with no display to show it on
	// (a service, a container) the browser runs headless anyway.
	Headless bool
}

// defaultLimit is how long an action may take when its timeout parameter is
// not given.
const defaultLimit = 30 * time.Second

func limitOf(d step.Duration) time.Duration {
	if d <= 0 {
		return defaultLimit
	}
	return d.D()
}

// actions holds the robot configuration the actions run with.
type actions struct {
	cfg Config
}

// Actions returns the browser.* step definitions for a robot whose browser
// is configured by cfg. Every one needs the browser capability, which a
// robot advertises only when Find found a working Chromium.
func Actions(cfg Config) []*step.Action {
	a := &actions{cfg: cfg}
	needs := step.NeedsCapability("browser")
	badSelector := step.Rejects("the selector is missing or does not parse, or by is neither css nor xpath")
	notFound := step.Fails("no element matches the selector within the timeout")
	noBrowser := step.Fails("the browser cannot start")
	return []*step.Action{
		step.Define("browser.open", "Starts the job's browser, optionally sizing the viewport and opening a page.",
			a.open, needs, noBrowser,
			step.Fails("the page does not load"),
			step.Rejects("the url is not absolute or the viewport size is negative")),
		step.Define("browser.navigate", "Opens a page in the job's browser and waits for it to load.",
			a.navigate, needs, noBrowser,
			step.Fails("the page does not load (no such host, connection refused, timeout)"),
			step.Rejects("the url is not absolute or wait_until is neither load nor none")),
		step.Define("browser.click", "Clicks the first element the selector matches, once it is visible.",
			a.click, needs, badSelector, notFound),
		step.Define("browser.type", "Types text into the first element the selector matches, as key presses.",
			a.typeText, needs, badSelector, notFound),
		step.Define("browser.select", "Chooses an option of a select element by its value or its label.",
			a.selectOption, needs, badSelector, notFound,
			step.Fails("the element has no such option within the timeout"),
			step.Rejects("neither or both of value and label are given, or the element is not a select")),
		step.Define("browser.wait_for", "Waits until the first element the selector matches is visible, present, hidden or gone.",
			a.waitFor, needs, badSelector,
			step.Fails("the element does not reach the state within the timeout"),
			step.Rejects("state is not visible, present, hidden or gone")),
		step.Define("browser.scrape", "Reads a table, or a field set from each of many repeated elements, as rows.",
			a.scrape, needs, badSelector, notFound,
			step.Rejects("without fields, the selector matches something other than a table or its rows")),
		step.Define("browser.extract", "Reads the text or an attribute of the first, or of every, element the selector matches.",
			a.extract, needs, badSelector, notFound),
		step.Define("browser.screenshot", "Saves a PNG of the page or of one element in the job's directory.",
			a.screenshot, needs, badSelector, notFound,
			step.Rejects("the name is not a plain file name"),
			step.Fails("the file cannot be written")),
		step.Define("browser.evaluate", "Runs a JavaScript expression in the page and returns its value.",
			a.evaluate, needs, noBrowser,
			step.Rejects("the script throws"),
			step.Fails("the script does not finish within the timeout")),
		step.Define("browser.close", "Closes the job's browser; a later browser step starts a new one.",
			a.closeBrowser, needs),
	}
}

// none is the outputs of an action that produces nothing.
type none struct{}
