import numpy as np

from offerflow.customer_ai.charts import calibration_figure, lift_table


def test_lift_table_orders_deciles_and_gains_reach_one():
    rng = np.random.default_rng(0)
    p = rng.random(1000)
    y = (rng.random(1000) < p).astype(int)
    table = lift_table(y, p)
    assert table["decile"].tolist() == list(range(1, 11))
    assert table["profiles"].sum() == 1000
    assert table["lift"].iat[0] > 1.5 > table["lift"].iat[-1]
    assert table["cumulative_gain"].iat[-1] == 1.0
    assert np.all(np.diff(table["cumulative_gain"]) >= 0)


def test_calibration_figure_has_axes():
    fig = calibration_figure(np.array([0, 1, 0, 1] * 25), np.linspace(0.01, 0.99, 100))
    assert fig.axes[0].get_title() == "Calibration (holdout)"
