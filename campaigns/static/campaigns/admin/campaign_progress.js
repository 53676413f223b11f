/*
 * Live progress of a campaign on its admin change page. While the campaign is
 * caching, this script reads the staff-only progress endpoint every few
 * seconds and updates the panel in place. It stops when the run ends. Every
 * text comes from the server already translated and formatted.
 */
(function () {
    "use strict";

    // Consecutive failed reads after which the panel stops polling.
    const MAX_FAILURES = 30;

    function watch(panel) {
        const url = panel.dataset.url;
        const interval = Number(panel.dataset.interval) || 2000;
        let failures = 0;

        function setText(name, value) {
            const element = panel.querySelector('[data-field="' + name + '"]');
            if (element) {
                element.textContent = value;
            }
        }

        function render(data) {
            const bar = panel.querySelector('[data-field="bar"]');
            if (bar) {
                bar.style.width = data.bar_width + "%";
            }
            setText("percentage_display", data.percentage_display);
            setText("points_display", data.points_display);
            setText("state_label", data.state_label);
            const badge = panel.querySelector('[data-field="state_label"]');
            if (badge) {
                badge.className = "cc-state cc-state-" + data.state;
            }
            setText("started_display", data.started_display);
            setText("last_point_display", data.last_point_display);
            setText("completed_display", data.completed_display);
            setText("error", data.error || "—");
            if (data.run) {
                setText("run_state_label", data.run.state_label);
                setText("run_points_display", data.run.points_display);
                setText("run_tiles_display", data.run.tiles_display);
            }
            panel.dataset.inProgress = data.caching_in_progress ? "true" : "false";
            if (!data.caching_in_progress) {
                setText("live_status", "");
            }
        }

        function poll() {
            fetch(url, {credentials: "same-origin", headers: {Accept: "application/json"}})
                .then(function (response) {
                    if (!response.ok) {
                        throw new Error("HTTP " + response.status);
                    }
                    return response.json();
                })
                .then(function (data) {
                    failures = 0;
                    render(data);
                    if (data.caching_in_progress) {
                        window.setTimeout(poll, interval);
                    }
                })
                .catch(function () {
                    failures += 1;
                    setText("live_status", panel.dataset.errorText || "");
                    if (failures < MAX_FAILURES) {
                        window.setTimeout(poll, interval * 2);
                    }
                });
        }

        if (panel.dataset.inProgress === "true") {
            window.setTimeout(poll, interval);
        }
    }

    function start() {
        const panel = document.getElementById("campaign-progress");
        if (panel) {
            watch(panel);
        }
    }

    // The admin loads this script in the page head, before the panel exists.
    if (document.readyState === "loading") {
        document.addEventListener("DOMContentLoaded", start);
    } else {
        start();
    }
}());
