"""The search loop: scheduling, measurement, judging, promotion, dashboard and export."""
