"""The report of a simulated-set evaluation: one table of the model-stage figures, plots and a gallery."""

from __future__ import annotations

from pathlib import Path

from survey_deblend.evaluation import plots
from survey_deblend.evaluation.render import Section, Table, fmt, fmt_pm, to_text
from survey_deblend.evaluation.report import write_outputs

__all__ = ["simulated_table", "write_simulated_report"]

SIM_COLUMNS = ["estimator", "N", "m1", "c1", "m2", "c2", "RMSE", "roundness", "ring m1", "ring c1", "ring m2",
               "ring c2", "SSIM", "cosine", "z sigma_NMAD", "z outliers", "failed"]
_FILE_KEYS = {"model": "model", "HSM on reconstruction": "hsm_recon", "HSM on isolated": "hsm_isolated",
              "HSM on blend": "hsm_blend"}


def simulated_table(result: dict) -> Table:
    """The one table of ``evaluate_simulated``: shape bias, scatter, ring response, images and redshifts."""
    rows = []
    for r in result["table"]:
        rows.append([
            r["estimator"], fmt(r["n"]), fmt_pm(r["m1"], r["m1_err"], 3), fmt_pm(r["c1"], r["c1_err"], 3),
            fmt_pm(r["m2"], r["m2_err"], 3), fmt_pm(r["c2"], r["c2_err"], 3), fmt(r["rmse"], 3),
            fmt(r["roundness"], 3),
            *(fmt_pm(r.get(f"ring_{k}"), r.get(f"ring_{k}_err"), 3) if f"ring_{k}" in r else "n/a"
              for k in ("m1", "c1", "m2", "c2")),
            fmt(r.get("ssim"), 3), fmt(r.get("cosine"), 3), fmt(r.get("z_sigma_nmad"), 3),
            fmt(r.get("z_outlier_fraction"), 3), fmt(r.get("failure_fraction"), 3),
        ])
    ring = result.get("ring")
    note = ("Against the PSF-free truth labels; m, c from fits estimate = (1 + m) truth + c (bootstrap errors). "
            "Ring m, c from +g/-g ring sets with shape noise cancelled. SSIM (i band) and cosine similarity "
            "against the noiseless isolated galaxy: the reconstruction's, and on the HSM-on-blend row the blended "
            "scene's (the baseline). z outliers: |dz|/(1+z) > 0.15.")
    if ring and "labels" in ring:
        lab = ring["labels"]
        note += f" Ring response of the truth labels themselves: m1 = {fmt(lab['m1'], 3)}, m2 = {fmt(lab['m2'], 3)}."
    return Table(f"{result['dataset']}: {result['n_used']} of {result['n_total']} samples with SNR >= "
                 f"{result['snr_min']} ({result['frame']} frame, {result['band']} band)", SIM_COLUMNS, rows, note)


def write_simulated_report(result: dict, arrays: dict, out_dir: Path) -> Path:
    """Write plots, ``report.md``, ``report.html`` and ``metrics.json`` of a simulated-set evaluation."""
    out_dir.mkdir(parents=True, exist_ok=True)
    e1t, e2t = arrays["truth"]
    figures: list[tuple[str, Path]] = []
    fits = {r["estimator"]: r for r in result["table"]}
    for name, key in _FILE_KEYS.items():
        e1, e2 = arrays["shapes"][key]
        figures.append((f"{name} against the truth: density of galaxies",
                        plots.pred_vs_ref(e1, e2, e1t, e2t, out_dir / f"{key}_vs_truth_density.png", name, "truth",
                                          fits=fits[name])))
    e1, e2 = arrays["shapes"]["model"]
    figures.append(("residuals model - truth",
                    plots.residual_hist(e1, e2, e1t, e2t, out_dir / "model_residuals.png", "model", "truth")))
    figures.append(("residuals model - truth against SNR",
                    plots.residuals_vs_snr(e1, e2, e1t, e2t, arrays["snr"], out_dir / "model_residuals_vs_snr.png",
                                           "model", "truth")))
    samples = {"truth": (e1t, e2t)}
    samples.update({name: arrays["shapes"][key] for name, key in _FILE_KEYS.items()})
    posterior = arrays.get("posterior")
    if posterior is not None:
        summary = posterior["summary"]
        samples["flow: posterior mean"] = (summary["e1_pred"], summary["e2_pred"])
        samples["flow: posterior draw"] = (summary["e1_sample"], summary["e2_sample"])
    figures.append(("|e| distributions", plots.e_distribution(samples, out_dir / "e_modulus.png")))
    gallery = arrays.get("gallery") or {}
    if gallery and len(gallery.get("blend", [])):
        figures.append(("blended scene / reconstruction / truth",
                        plots.gallery(gallery, out_dir / "gallery.png", result["band"], arrays["pixel_scale"])))
    sections = [Section("Model-stage figures", tables=[simulated_table(result)], paragraphs=[
        f"Model {result.get('model')}; ring set: {result.get('ring_dataset') or 'none'}."]),
        Section("Figures", figures=figures)]
    if posterior is not None:
        sections.append(posterior_section(result["posterior"], posterior["calibration"], out_dir))
    metrics = dict(result)
    metrics["figures"] = [p.name for section in sections for _, p in section.figures]
    write_outputs(out_dir, "survey-deblend evaluation on simulated data", sections, metrics)
    return out_dir


POSTERIOR_COLUMNS = ["figure", "value", "goal"]
_POSTERIOR_ROWS = [("roundness_sample", "roundness of one posterior draw per galaxy", "1.00 ± 0.01"),
                   ("roundness", "roundness of the posterior mean", ""),
                   ("coverage_e_68", "(e1, e2) 68 % HPD region coverage", "0.68 ± 0.02"),
                   ("coverage_e_95", "(e1, e2) 95 % HPD region coverage", "0.95 ± 0.02"),
                   ("coverage_z_68", "z 16th-84th percentile coverage", "0.68 ± 0.02"),
                   ("coverage_z_95", "z 2.5th-97.5th percentile coverage", "0.95 ± 0.02"),
                   ("rmse_e", "RMSE of the posterior mean e", "<= 0.100"),
                   ("e_pull_rms", "RMS of (mean - truth) / e_sigma_pred", "1"),
                   ("z_sigma_nmad", "z sigma_NMAD of the posterior median", "<= 0.03"),
                   ("z_outliers", "z outliers (|dz|/(1+z) > 0.15)", "< 0.05")]


def posterior_section(figures: dict, calibration: dict, out_dir: Path) -> Section:
    """The flow head's calibration: the figures of issue 13 with their goals, rank/PIT histograms, coverage."""
    rows = [[label, fmt(figures.get(key), 3), goal] for key, label, goal in _POSTERIOR_ROWS]
    table = Table("Posterior (flow head) on the same galaxies", POSTERIOR_COLUMNS, rows,
                  f"Summaries from {figures.get('n_samples_summary')} Sobol draws per galaxy; calibration from "
                  f"{figures.get('n_samples_calibration')} random draws per galaxy.")
    plotted = [("rank / PIT histograms of the truth under the posterior",
                plots.calibration_histograms(calibration, out_dir / "posterior_rank_pit.png")),
               ("coverage of the credible regions",
                plots.coverage_curve(calibration, out_dir / "posterior_coverage.png"))]
    return Section("Posterior calibration (flow head)", tables=[table], figures=plotted)


def format_simulated(result: dict) -> str:
    """The table as terminal text."""
    return to_text(simulated_table(result))
