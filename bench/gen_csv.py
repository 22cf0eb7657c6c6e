"""Writes a deterministic taxi-trip-like CSV of about SIZE_MB megabytes to PATH.

Mixed types on purpose: integers, floats (some empty), ISO-8601 UTC timestamps, dates,
booleans, short categorical strings and free text with quotes and commas.
Usage: python gen_csv.py PATH SIZE_MB
"""
import random
import sys

path, size_mb = sys.argv[1], float(sys.argv[2])
target = int(size_mb * 1024 * 1024)
rng = random.Random(42)
vendors = ["CMT", "VTS", "DDS", "CURB"]
payments = ["card", "cash", "no charge", "dispute"]
zones = ["Upper East Side", "JFK Airport", "Midtown, Center", 'SoHo "Cast Iron"', "Astoria", "Harlem"]
header = "trip_id,vendor,pickup_at,dropoff_at,pickup_date,passengers,distance_mi,fare,tip,payment,store_and_forward,zone\n"
written = 0
with open(path, "w", newline="") as f:
    f.write(header)
    written += len(header)
    i = 0
    lines = []
    while written < target:
        day = 1 + i % 28
        hour = (i // 28) % 24
        minute = i % 60
        second = (i * 7) % 60
        dur = rng.randint(60, 3600)
        end_s = second + dur
        end_m = minute + end_s // 60
        end_h = hour + end_m // 60
        end_h = min(end_h, 23)
        zone = rng.choice(zones)
        zone = '"' + zone.replace('"', '""') + '"' if ("," in zone or '"' in zone) else zone
        tip = "" if i % 9 == 0 else f"{rng.random() * 10:.2f}"
        line = (
            f"{i},{rng.choice(vendors)},2024-03-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}Z,"
            f"2024-03-{day:02d}T{end_h:02d}:{end_m % 60:02d}:{end_s % 60:02d}Z,2024-03-{day:02d},"
            f"{rng.randint(1, 6)},{rng.random() * 30:.3f},{rng.random() * 80:.2f},{tip},"
            f"{rng.choice(payments)},{'true' if i % 13 == 0 else 'false'},{zone}\n"
        )
        lines.append(line)
        written += len(line)
        i += 1
        if len(lines) >= 10000:
            f.write("".join(lines))
            lines.clear()
    f.write("".join(lines))
print(f"{path}: {i} rows, {written / 1024 / 1024:.1f} MiB")
