-- Version 6: the label files whose class counts are still to be read, found without scanning the inventory
-- (the counting worker looks for them after every delivery; a dataset of a million counted labels has none).
CREATE INDEX inventory_uncounted ON inventory (dataset, key)
    WHERE item = 'label' AND deleted = 0 AND class_counts IS NULL;
